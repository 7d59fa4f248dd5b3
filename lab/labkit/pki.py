"""Certificate authorities and certificates, made with the openssl CLI (EC P-256)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from .util import run, write


def _key(path: Path) -> None:
    if not path.exists():
        run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                path,
            ],
            quiet=True,
            capture=True,
        )
        path.chmod(0o600)


def ensure_ca(directory: Path, name: str, common_name: str) -> tuple[Path, Path]:
    """`<name>.crt`/`<name>.key`: a self-signed CA, made once per directory."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    if crt.exists() and key.exists():
        return crt, key
    _key(key)
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-new",
            "-key",
            key,
            "-sha256",
            "-days",
            "3650",
            "-subj",
            f"/CN={common_name}",
            "-out",
            crt,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
        quiet=True,
        capture=True,
    )
    return crt, key


def ensure_cert(
    directory: Path,
    name: str,
    *,
    ca: tuple[Path, Path],
    common_name: str,
    organization: str | None = None,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> tuple[Path, Path]:
    """`<name>.crt`/`<name>.key` signed by `ca`; made once per directory."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    if crt.exists() and key.exists():
        return crt, key
    _key(key)
    subject = f"/CN={common_name}" + (f"/O={organization}" if organization else "")
    usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "req.csr"
        extfile = write(Path(tmp) / "ext.cnf", "\n".join(ext) + "\n")
        run(
            ["openssl", "req", "-new", "-key", key, "-subj", subject, "-out", csr],
            quiet=True,
            capture=True,
        )
        run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                ca[0],
                "-CAkey",
                ca[1],
                "-CAcreateserial",
                "-days",
                "3650",
                "-sha256",
                "-extfile",
                extfile,
                "-out",
                crt,
            ],
            quiet=True,
            capture=True,
        )
    return crt, key


def ensure_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """`<name>.key` and its public half `<name>.pub` (service-account signing)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, pub = directory / f"{name}.key", directory / f"{name}.pub"
    _key(key)
    if not pub.exists():
        run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], quiet=True, capture=True)
    return key, pub
