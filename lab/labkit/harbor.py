"""A Harbor-like registry on localhost:30003: token auth in front of Debian's docker-registry.

Harbor itself (and cesanta/docker_auth) cannot be fetched here, so its login is played by
our own token server (lab/go/tokenserver, Go standard library, built and cached like the
other Go builds) and the registry is distribution 2.8 with `auth: token`:

    client --GET /v2/--> registry :30003  --401 Bearer realm=https://localhost:30004/token
    client --GET /token?scope=…  (Basic robot$studenten+ci:…)--> token server :30004
    client --GET /v2/… (Bearer <RS256 JWT, x5c = the signing certificate>)--> registry

Project `studenten` (private): robot `robot$studenten+ci` may pull and push, the member
`studenten-reader` (role guest) may only pull, anonymous gets nothing. Passwords are random
per lab dir, in $LAB/harbor/*-password (never printed); the token server keeps only their
PBKDF2 hashes. TLS with the lab's registry CA, trusted by dockerd and containerd like :30002.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
from pathlib import Path

from . import pki
from .build import GoBuild, build_one, go_binary
from .services import registry_ca, trust_ca
from .util import (
    LabError,
    Paths,
    daemon_pid,
    http_status,
    info,
    run,
    start_daemon,
    stop_daemon,
    update_env,
    wait_for,
    write,
    write_json,
)

REGISTRY = "localhost:30003"
TOKEN_ADDRESS = "localhost:30004"
SERVICE = "manifest-lab-harbor"
ISSUER = "manifest-lab-token"
PROJECT = "studenten"
ROBOT = f"robot${PROJECT}+ci"
READER = "studenten-reader"
USERS = {"robot": ROBOT, "reader": READER}
PBKDF2_ITERATIONS = 50_000
TOKENSERVER = GoBuild(name="tokenserver", packages=(".",), binaries=("tokenserver",))
DAEMONS = ("harbor-token", "harbor-registry")


def directory(paths: Paths) -> Path:
    return paths.lab / "harbor"


def password_file(paths: Paths, who: str) -> Path:
    return directory(paths) / f"{who}-password"


def _password(paths: Paths, who: str) -> str:
    """A user's password: random, made once per lab dir, never printed."""
    path = password_file(paths, who)
    if not path.exists():
        write(path, secrets.token_urlsafe(24), mode=0o600)
    return path.read_text().strip()


def _hashed(password: str) -> dict[str, object]:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
    return {"salt": salt.hex(), "pbkdf2_sha256": digest.hex(), "iterations": PBKDF2_ITERATIONS}


def _signing_pair(paths: Paths) -> tuple[Path, Path]:
    """The token signing key (RSA, PKCS#8) and its self-signed certificate, once per lab dir.

    The registry trusts exactly this certificate (its rootcertbundle); every token carries it
    in its x5c header.
    """
    key, crt = directory(paths) / "token-signing.key", directory(paths) / "token-signing.crt"
    if not (key.exists() and crt.exists()):
        directory(paths).mkdir(parents=True, exist_ok=True)
        run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256"),
                *("-days", "3650", "-subj", "/CN=manifest-lab token signer"),
                *("-keyout", key, "-out", crt),
            ],
            quiet=True,
            capture=True,
        )
        key.chmod(0o600)
    return key, crt


def _configs(paths: Paths) -> tuple[Path, Path]:
    """The token server's and the registry's configuration files."""
    ca = pki.ensure_ca(paths.pki, "registry-ca", "manifest-lab registry CA")
    tls_crt, tls_key = pki.ensure_cert(
        paths.pki,
        "registry",
        ca=ca,
        common_name="localhost",
        dns=["localhost"],
        ips=["127.0.0.1", "::1"],
        server=True,
    )
    signing_key, signing_crt = _signing_pair(paths)
    host = TOKEN_ADDRESS.replace("localhost", "127.0.0.1")
    token_config = write_json(
        directory(paths) / "tokenserver.json",
        {
            "listen": host,
            "tls_cert": str(tls_crt),
            "tls_key": str(tls_key),
            "signing_key": str(signing_key),
            "signing_cert": str(signing_crt),
            "issuer": ISSUER,
            "service": SERVICE,
            "ttl_seconds": 300,
            "users": {name: _hashed(_password(paths, who)) for who, name in USERS.items()},
            "projects": {
                PROJECT: {
                    "public": False,
                    "members": {READER: "guest"},
                    "robots": {ROBOT.split("+", 1)[1]: ["pull", "push"]},
                }
            },
        },
        mode=0o600,
    )
    # JSON is YAML: the registry reads this as its config.yml.
    registry_config = write_json(
        directory(paths) / "registry.yml",
        {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(directory(paths) / "data")},
                "delete": {"enabled": True},
            },
            "http": {
                "addr": REGISTRY.replace("localhost", "127.0.0.1"),
                "tls": {"certificate": str(tls_crt), "key": str(tls_key)},
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {
                "token": {
                    "realm": f"https://{TOKEN_ADDRESS}/token",
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(signing_crt),
                }
            },
        },
    )
    return token_config, registry_config


def up(paths: Paths) -> None:
    for name, address in zip(DAEMONS, (TOKEN_ADDRESS, REGISTRY), strict=True):
        if daemon_pid(paths, name) is None and _listening(int(address.rsplit(":", 1)[1])):
            raise LabError(
                f"{address} is in use by another process (another lab's {name}? take it down "
                "with `MANIFEST_LAB_DIR=<its dir> python3 lab/lab.py harbor-down`)"
            )
    binary = build_one(paths, TOKENSERVER, go_binary()) / "tokenserver"
    token_config, registry_config = _configs(paths)
    trust_ca(paths, REGISTRY)
    start_daemon(paths, "harbor-token", [binary, "-config", token_config])
    start_daemon(paths, "harbor-registry", ["docker-registry", "serve", registry_config])
    ca = registry_ca(paths)
    token_url = f"https://{TOKEN_ADDRESS}/token?service={SERVICE}"
    url = f"https://{REGISTRY}/v2/"
    try:
        wait_for(
            f"the token server at {token_url}", lambda: http_status(token_url, cafile=ca) == 200, 30
        )
        wait_for(
            f"the token-auth registry at {url}", lambda: http_status(url, cafile=ca) == 401, 30
        )
    except LabError as exc:
        raise LabError(f"{exc}\n{_log_tails(paths)}") from exc
    update_env(
        paths,
        {
            "MANIFEST_TEST_HARBOR_REGISTRY": REGISTRY,
            "MANIFEST_TEST_HARBOR_ROBOT_USER": ROBOT,
            "MANIFEST_TEST_HARBOR_ROBOT_PASSWORD_FILE": str(password_file(paths, "robot")),
            "MANIFEST_TEST_HARBOR_READER_USER": READER,
            "MANIFEST_TEST_HARBOR_READER_PASSWORD_FILE": str(password_file(paths, "reader")),
        },
    )
    info(f"Harbor-like registry at https://{REGISTRY}, token server https://{TOKEN_ADDRESS}")
    info(f"  project {PROJECT}: {ROBOT} pull+push, {READER} pull, anonymous nothing")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _log_tails(paths: Paths, lines: int = 20) -> str:
    tails = []
    for name in DAEMONS:
        log = paths.logs / f"{name}.log"
        if log.exists():
            tail = log.read_bytes().decode(errors="replace").splitlines()[-lines:]
            tails.append(f"----- {log}\n" + "\n".join(tail))
    return "\n".join(tails)


def down(paths: Paths) -> None:
    for name in DAEMONS:
        stop_daemon(paths, name)
    for name in DAEMONS:
        if daemon_pid(paths, name) is not None:
            raise LabError(f"{name} is still running")


def status(paths: Paths) -> None:
    for name in DAEMONS:
        pid = daemon_pid(paths, name)
        print(f"{name:<24} {'running, pid ' + str(pid) if pid else 'stopped'}")
