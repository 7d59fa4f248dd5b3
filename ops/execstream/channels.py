"""The Kubernetes exec channel protocol (``v4``/``v5.channel.k8s.io``), as pure functions.

Every binary frame starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the exit
status (a JSON ``Status``), 255 (v5 only) a client's "close this channel" signal. Without
v5 a client cannot end the remote stdin, so a command that reads stdin is size-delimited
on the remote side (``head -c N``, see ``sized_stdin``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255

# If the command stops reading early (it failed), `cat` drains the rest: the API server
# sends no exit status while stdin is still arriving (kubectl then hangs until its I/O
# timeout and loses the status), so the stdin must always be read to its end.
_DRAIN = '{ "$@"; status=$?; cat >/dev/null; exit $status; }'


def sized_stdin(argv: Sequence[str], size: int | None) -> list[str]:
    """Wrap ``argv`` so that it reads exactly ``size`` bytes of stdin, then sees EOF.

    This is what lets stdin end under ``v4.channel.k8s.io``, which has no close signal.
    Whatever the command reads, all of stdin is consumed; the status is the command's own.
    """
    if size is None:
        return ["sh", "-c", _DRAIN, "drained-stdin", *argv]
    script = f'n="$1"; shift; head -c "$n" | {_DRAIN}'
    return ["sh", "-c", script, "sized-stdin", str(size), *argv]


def exit_code_from_status(raw: bytes) -> tuple[int | None, str]:
    """Exit code and message from the error channel's ``Status`` (None: no exit code)."""
    try:
        status = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None, f"unreadable exit status {raw[:200]!r}"
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message") or status.get("reason") or "failed")
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message")), message
                except (TypeError, ValueError):
                    break
    return None, message
