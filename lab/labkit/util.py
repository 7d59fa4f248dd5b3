"""Paths, logging, subprocesses and background daemons for the lab."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAB_SOURCE = Path(__file__).resolve().parent.parent  # the repo's lab/ folder


class LabError(Exception):
    """A lab step failed; the message says what and where to look."""


@dataclass(frozen=True, kw_only=True)
class Paths:
    """Every place the lab writes to."""

    lab: Path
    cache: Path

    @classmethod
    def from_env(cls) -> Paths:
        lab = Path(os.environ.get("MANIFEST_LAB_DIR", "/tmp/manifest-lab")).resolve()
        cache = Path(os.environ.get("MANIFEST_LAB_CACHE", "/var/cache/manifest-lab")).resolve()
        return cls(lab=lab, cache=cache)

    @property
    def env_file(self) -> Path:
        return self.lab / "env"

    @property
    def logs(self) -> Path:
        return self.lab / "logs"

    @property
    def pids(self) -> Path:
        return self.lab / "pids"

    @property
    def pki(self) -> Path:
        return self.lab / "pki"

    @property
    def docker(self) -> Path:
        return self.lab / "docker"

    @property
    def docker_sock(self) -> Path:
        return self.docker / "docker.sock"

    @property
    def docker_cli_config(self) -> Path:
        return self.docker / "cli"

    @property
    def registry(self) -> Path:
        return self.lab / "registry"

    @property
    def password_file(self) -> Path:
        return self.registry / "password"

    @property
    def kubeconfig(self) -> Path:
        return self.lab / "kubeconfig"

    @property
    def bin_cache(self) -> Path:
        return self.cache / "bin"


def info(message: str) -> None:
    print(f"[lab] {message}", flush=True)


def warn(message: str) -> None:
    print(f"[lab] WARNING: {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input_bytes: bytes | None = None,
    log: Path | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise LabError with the tail of its output."""
    args = [str(a) for a in argv]
    if not quiet:
        info("$ " + shlex.join(args))
    full_env = {**os.environ, **env} if env is not None else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.run(
                args, env=full_env, cwd=cwd, input=input_bytes, stdout=out, stderr=subprocess.STDOUT
            )
        if check and proc.returncode != 0:
            tail = log.read_bytes()[-3000:].decode(errors="replace")
            raise LabError(f"{args[0]} exited {proc.returncode}; log {log}:\n{tail}")
        return proc
    proc = subprocess.run(
        args,
        env=full_env,
        cwd=cwd,
        input=input_bytes,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and proc.returncode != 0:
        err = (proc.stderr or b"")[-3000:].decode(errors="replace")
        raise LabError(f"command failed ({proc.returncode}): {shlex.join(args)}\n{err}")
    return proc


def output(argv: Sequence[str | Path], **kwargs: Any) -> str:
    proc = run(argv, capture=True, quiet=True, **kwargs)
    return proc.stdout.decode()


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)
    return path


def write_json(path: Path, value: object, mode: int = 0o644) -> Path:
    return write(path, json.dumps(value, indent=2) + "\n", mode)


def digest(parts: Iterable[str | bytes | Path], length: int = 12) -> str:
    """A short content hash of strings, bytes and files (a cache key)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.name.encode())
            h.update(part.read_bytes())
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:length]


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_status(url: str, *, cafile: Path | None = None, timeout: float = 2.0) -> int:
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --- background daemons -------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def daemon_pid(paths: Paths, name: str) -> int | None:
    """The pid of a daemon the lab started, if it still runs (checked by exe)."""
    pid_file = paths.pids / f"{name}.pid"
    try:
        pid_text, exe = pid_file.read_text().split("\n", 1)
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    cmd = _cmdline(pid)
    if not _alive(pid) or not cmd or Path(cmd[0]).name != exe.strip():
        return None
    return pid


def start_daemon(
    paths: Paths,
    name: str,
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a long-running process in its own session, output to logs/<name>.log."""
    existing = daemon_pid(paths, name)
    if existing is not None:
        info(f"{name} already running (pid {existing})")
        return existing
    args = [str(a) for a in argv]
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.pids.mkdir(parents=True, exist_ok=True)
    log = paths.logs / f"{name}.log"
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
            cwd=cwd,
            start_new_session=True,
        )
    write(paths.pids / f"{name}.pid", f"{proc.pid}\n{Path(args[0]).name}\n")
    info(f"started {name} (pid {proc.pid}, log {log})")
    time.sleep(0.2)
    if proc.poll() is not None:
        tail = log.read_bytes()[-3000:].decode(errors="replace")
        raise LabError(f"{name} exited at once ({proc.returncode}); log {log}:\n{tail}")
    return proc.pid


def stop_daemon(paths: Paths, name: str, *, timeout: float = 15.0) -> None:
    """SIGTERM a daemon's process group, SIGKILL after `timeout` seconds."""
    pid = daemon_pid(paths, name)
    pid_file = paths.pids / f"{name}.pid"
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    info(f"stopping {name} (pid {pid})")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            break
        warn(f"{name} did not stop on SIGTERM within {timeout:.0f}s; sending SIGKILL")
    pid_file.unlink(missing_ok=True)


def pids_matching(needle: str) -> list[int]:
    """Pids whose command line contains `needle` (a lab-specific path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if any(needle in part for part in _cmdline(int(entry.name))):
            found.append(int(entry.name))
    return found


def kill_pids(pids: Iterable[int], what: str) -> None:
    pids = list(pids)
    if not pids:
        return
    info(f"killing {len(pids)} leftover {what} process(es): {pids}")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)


def mounts_under(prefix: Path) -> list[str]:
    """Mount points under `prefix`, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point == str(prefix) or mount_point.startswith(str(prefix) + "/"):
            found.append(mount_point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_under(prefix: Path) -> None:
    for _ in range(3):
        points = mounts_under(prefix)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", point], stderr=subprocess.DEVNULL, check=False)
        for point in mounts_under(prefix):
            subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL, check=False)
    left = mounts_under(prefix)
    if left:
        warn(f"mounts still present under {prefix}: {left[:5]}")


def read_env(paths: Paths) -> dict[str, str]:
    values: dict[str, str] = {}
    if paths.env_file.exists():
        for line in paths.env_file.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export ") :].split("=", 1)
                values[key] = shlex.split(value)[0] if value else ""
    return values


def update_env(paths: Paths, values: Mapping[str, str]) -> None:
    """Add or replace `export KEY=VALUE` lines in $LAB/env."""
    merged = read_env(paths)
    merged.update(values)
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in merged.items())
    write(paths.env_file, text)
