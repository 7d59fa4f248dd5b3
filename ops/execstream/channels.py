"""The Kubernetes exec channel protocol (``v4``/``v5.channel.k8s.io``), as pure functions.

Every binary frame starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the exit
status (a JSON ``Status``), 255 (v5 only) a client's "close this channel" signal. Without
v5 a client cannot end the remote stdin, so a command that reads stdin is size-delimited
on the remote side (``head -c N``, see ``stdin_wrapped``).
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


# The wrapper of every command that reads stdin. Its first line is the client's, sent once
# the handshake has told it the protocol: "-" (v5: stdin goes straight into the command
# and ends with the close signal) or the size of the input (v4: `head -c N` ends it). So
# no exec is spent learning the protocol first; without that line (stdin closed at once)
# the command never runs. `read` takes the line a byte at a time, never more.
_STDIN_WRAPPER = (
    'IFS= read -r n || exit 125; if [ "$n" = - ]; then ' + _DRAIN + "; "
    'else head -c "$n" | ' + _DRAIN + "; fi"
)


def stdin_wrapped(argv: Sequence[str]) -> list[str]:
    """Wrap ``argv`` to read the stdin line that says how its stdin ends (see
    ``stdin_first_line``), then all of its stdin; the status is the command's own."""
    return ["sh", "-c", _STDIN_WRAPPER, "stdin", *argv]


def stdin_first_line(protocol: str, size: int | None) -> bytes | None:
    """What the client sends first into ``stdin_wrapped``: None when the input cannot be
    ended under ``protocol`` (v4 without its size)."""
    if protocol == V5:
        return b"-\n"
    return None if size is None else f"{size}\n".encode()


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
