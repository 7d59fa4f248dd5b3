"""The exec layer against FakeExecServer (the Kubernetes exec wire protocol, real processes).

The fake stands in for the API server because no cluster runs in unit tests; the same
code is proven against the real cluster in tests/e2e/test_backup_e2e.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess

import pytest

from ops.errors import ExecFailed, NotFound
from ops.execstream import CompletedExec, LocalRunner, PodExec, StderrTail
from ops.execstream.channels import exit_code_from_status, stdin_wrapped
from ops.kube import KubeTarget
from tests.fakes.exec_server import V4, V5, FakeExecServer, fake_exec_server

TARGET = KubeTarget(kubeconfig=None, context="fake", namespace="ns")
PROTOCOLS = [pytest.param((V5, V4), id="v5"), pytest.param((V4,), id="v4-only")]


def pod_exec(server: FakeExecServer, pod: str = "postgres-0", **kw: object) -> PodExec:
    return PodExec(TARGET, pod, client_factory=server.client_factory, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocols", PROTOCOLS)
def test_binary_stdin_and_stdout_pass_through_unchanged(protocols):
    data = os.urandom(3 * 1024 * 1024 + 17) + b"\r\n\x00\xff" * 1000
    out = io.BytesIO()
    with fake_exec_server(protocols=protocols) as server:
        result = pod_exec(server).run(
            ["cat"], stdin=io.BytesIO(data), stdin_size=len(data), stdout=out
        )
    assert out.getvalue() == data
    assert (result.returncode, result.stdin_bytes, result.stdout_bytes) == (0, len(data), len(data))


def test_v5_ends_stdin_with_the_close_signal_without_a_size():
    data = os.urandom(100_000)
    with fake_exec_server(protocols=(V5,)) as server:
        result = pod_exec(server).run(["sha256sum"], stdin=io.BytesIO(data))
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("protocols", PROTOCOLS)
def test_no_exec_is_spent_learning_the_protocol(protocols):
    """The handshake of the command itself tells the protocol; the first stdin line then
    says how stdin ends (it used to cost an empty `sh -c 'exit 0'` exec first, 0.1 s)."""
    data = os.urandom(10_000)
    with fake_exec_server(protocols=protocols) as server:
        runner = pod_exec(server)
        for _ in range(2):
            out = io.BytesIO()
            runner.run(["cat"], stdin=io.BytesIO(data), stdin_size=len(data), stdout=out)
            assert out.getvalue() == data
        commands = server.behaviour.commands
    assert [c[-1] for c in commands] == ["cat", "cat"]


@pytest.mark.parametrize(
    ("first_line", "stdin_of_the_command"),
    [(b"-\n", "the file itself"), (b"5\n", "a pipe from head -c")],
    ids=["v5", "v4"],
)
def test_stdin_goes_through_head_c_only_where_the_protocol_needs_it(
    tmp_path, first_line, stdin_of_the_command
):
    """Under v5 the command reads the exec's stdin itself (no pipe more in the pod)."""
    given = tmp_path / "stdin"
    given.write_bytes(first_line + b"hello world")
    probe = "readlink /proc/self/fd/0; cat"
    with given.open("rb") as stdin:
        out = subprocess.run(
            stdin_wrapped(["sh", "-c", probe]), stdin=stdin, capture_output=True, check=True
        ).stdout.decode()
    where, read = out.split("\n", 1)
    if stdin_of_the_command == "the file itself":
        assert (where, read) == (str(given), "hello world")
    else:
        assert where.startswith("pipe:") and read == "hello"


def test_a_command_whose_stdin_ends_before_its_first_line_never_runs(tmp_path):
    done = subprocess.run(
        stdin_wrapped(["touch", str(tmp_path / "ran")]), stdin=subprocess.DEVNULL, check=False
    )
    assert done.returncode != 0 and not (tmp_path / "ran").exists()


def test_v4_without_a_size_refuses_instead_of_hanging():
    with (
        fake_exec_server(protocols=(V4,)) as server,
        pytest.raises(ExecFailed, match="cannot end stdin"),
    ):
        pod_exec(server).run(["cat"], stdin=io.BytesIO(b"x"))


@pytest.mark.parametrize("protocols", PROTOCOLS)
def test_a_non_zero_exit_raises_with_the_remote_stderr(protocols):
    with fake_exec_server(protocols=protocols) as server:
        runner = pod_exec(server)
        with pytest.raises(ExecFailed, match=r"exited with 3: database \"x\" does not exist"):
            runner.run(["sh", "-c", "echo 'database \"x\" does not exist' >&2; exit 3"])
        result = runner.run(["sh", "-c", "exit 4"], check=False)
    assert result.returncode == 4


def test_a_stream_without_exit_status_is_an_error_never_a_success():
    with (
        fake_exec_server(omit_status=True) as server,
        pytest.raises(ExecFailed, match="without an exit status"),
    ):
        pod_exec(server).run(["echo", "looks fine"])


@pytest.mark.parametrize("cut_at", [0, 1, 65536, 300_000], ids=lambda n: f"cut-at-{n}")
def test_a_dropped_connection_is_an_error(cut_at):
    with (
        fake_exec_server(drop_after_stdout_bytes=cut_at) as server,
        pytest.raises(ExecFailed, match="without an exit status"),
    ):
        pod_exec(server).run(["head", "-c", "1000000", "/dev/zero"], stdout=io.BytesIO())


def test_a_missing_pod_is_not_found():
    with (
        fake_exec_server(pods={"postgres-0"}) as server,
        pytest.raises(NotFound, match="pod 'postgres-9' not found in namespace 'ns'"),
    ):
        pod_exec(server, pod="postgres-9").run(["true"])


def test_a_local_read_error_ends_the_stream_and_is_raised():
    class Broken(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def readable(self):
            return True

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 2:
                raise OSError(5, "Input/output error")
            return b"a" * 1000

    with fake_exec_server() as server, pytest.raises(OSError, match="Input/output"):
        pod_exec(server).run(["cat"], stdin=Broken(), stdin_size=10_000, stdout=io.BytesIO())


def test_a_failing_stdout_file_ends_the_stream_and_is_raised():
    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(28, "No space left on device")

    with fake_exec_server() as server, pytest.raises(OSError, match="No space"):
        pod_exec(server).run(["head", "-c", "1000000", "/dev/zero"], stdout=Full())


def test_stderr_is_kept_as_a_bounded_tail():
    tail = StderrTail(limit=10)
    for _ in range(1000):
        tail.add(b"0123456789abcdef")
    tail.add(b"END")
    assert tail.text().endswith("END") and len(tail.text()) == 10


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b'{"status":"Success"}', 0, id="success"),
        pytest.param(
            b'{"status":"Failure","reason":"NonZeroExitCode",'
            b'"details":{"causes":[{"reason":"ExitCode","message":"2"}]}}',
            2,
            id="exit-2",
        ),
        pytest.param(b'{"status":"Failure","message":"exec: not found"}', None, id="no-code"),
        pytest.param(b"garbage", None, id="unreadable"),
    ],
)
def test_exit_status_from_the_error_channel(raw, expected):
    assert exit_code_from_status(raw)[0] == expected


def test_the_stdin_wrapper_passes_arguments_as_words(tmp_path):
    argv = ["sh", "-c", 'printf %s "$1" > "$2"', "sh", "my db; rm -rf /", str(tmp_path / "x")]
    subprocess.run(stdin_wrapped(argv), input=b"3\nabc", check=True)
    assert (tmp_path / "x").read_text() == "my db; rm -rf /"


def test_result_is_a_frozen_value():
    result = CompletedExec(args=["true"], returncode=0, stderr="", stdout_bytes=0, stdin_bytes=0)
    with pytest.raises(AttributeError):
        result.returncode = 1  # type: ignore[misc]


@pytest.mark.parametrize("protocols", PROTOCOLS)
def test_a_command_that_stops_reading_ends_the_upload_at_once(protocols):
    import time

    started = time.monotonic()
    with fake_exec_server(protocols=protocols) as server:
        result = pod_exec(server).run(
            ["sh", "-c", "head -c 10 >/dev/null; echo gave up >&2; exit 3"],
            stdin=io.BytesIO(bytes(50 * 1024 * 1024)),
            stdin_size=50 * 1024 * 1024,
            check=False,
        )
    assert (result.returncode, result.stderr) == (3, "gave up")
    assert time.monotonic() - started < 10


def test_the_api_client_of_each_exec_is_closed():
    opened = []
    with fake_exec_server() as server:

        def factory(target):
            client = server.client_factory(target)
            closed = []
            client.close = lambda: closed.append(True)  # type: ignore[method-assign]
            opened.append(closed)
            return client

        runner = PodExec(TARGET, "postgres-0", client_factory=factory)
        runner.run(["cat"], stdin=io.BytesIO(b"x"), stdin_size=1, stdout=io.BytesIO())
    assert opened == [[True]]  # one command, one client (no probe of the protocol first)


def test_the_local_runner_bounds_what_it_captures_like_pod_exec():
    from ops.execstream.runner import CAPTURE_LIMIT

    with pytest.raises(ExecFailed, match="printed more than"):
        LocalRunner().run(["head", "-c", str(CAPTURE_LIMIT + 1), "/dev/zero"])
    done = LocalRunner().run(["head", "-c", str(CAPTURE_LIMIT), "/dev/zero"])
    assert (done.returncode, len(done.stdout), done.stdout_bytes) == (
        0,
        CAPTURE_LIMIT,
        CAPTURE_LIMIT,
    )


def test_a_runner_names_the_command_as_its_caller_describes_it():
    with pytest.raises(ExecFailed, match=r"^tool on this machine exited with 3: oops$"):
        LocalRunner(describe=lambda argv: "tool").run(["sh", "-c", "echo oops >&2; exit 3"])
    with pytest.raises(ExecFailed, match=r"^sh on this machine exited with 3"):
        LocalRunner().run(["sh", "-c", "exit 3"])
    result = LocalRunner().run(["sh", "-c", "echo out; echo err >&2; exit 5"], check=False)
    assert (result.args, result.returncode, result.stdout, result.stderr) == (
        ["sh", "-c", "echo out; echo err >&2; exit 5"],
        5,
        b"out\n",
        "err",
    )


@pytest.mark.parametrize("protocols", PROTOCOLS)
def test_an_input_shorter_than_its_size_is_an_error_never_a_clean_end_of_stdin(protocols):
    """A restore that fails in the pod with pg_restore's "end of file" must be told apart
    from a stream that ended short here: the command never sees a clean EOF of a short
    input (v5: no close signal; v4: `head -c N` is not left waiting forever)."""
    data = os.urandom(100_000)
    with (
        fake_exec_server(protocols=protocols) as server,
        pytest.raises(ExecFailed, match="the input ended after 100000 of its 150000 bytes"),
    ):
        pod_exec(server).run(["wc", "-c"], stdin=io.BytesIO(data), stdin_size=150_000)
