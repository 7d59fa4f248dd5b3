"""Run a command in a pod, or here, like ``subprocess.run``, streaming bytes both ways.

- ``framing``: RFC 6455 frames on bytes (parse server frames, mask client frames).
- ``channels``: the Kubernetes exec channel protocol (v4/v5, exit status, sized stdin).
- ``session``: one open exec stream (socket reads, stdin feeder, keep-alive).
- ``runner``: the ``CommandRunner`` protocol and its result, ``CompletedExec``.
- ``pod``/``local``: its two implementations, ``PodExec`` and ``LocalRunner``.

The exec layer knows nothing of what it runs: callers name their commands in messages
through the runners' ``describe`` hook.
"""

from ops.execstream.local import LocalRunner
from ops.execstream.pod import PodExec
from ops.execstream.runner import (
    CHUNK_SIZE,
    CommandRunner,
    CompletedExec,
    Progress,
    StderrTail,
)

__all__ = [
    "CHUNK_SIZE",
    "CommandRunner",
    "CompletedExec",
    "LocalRunner",
    "PodExec",
    "Progress",
    "StderrTail",
]
