"""Serve with uvicorn; on SIGTERM stop being ready, keep serving briefly, then drain."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType

import uvicorn

from student_api.core.config import Settings
from student_api.core.runtime import Runtime
from student_api.core.transport import JoinedWritesProtocol
from student_api.main import create_app

log = logging.getLogger("student_api")


class DrainingServer(uvicorn.Server):
    """A uvicorn server that treats the first SIGTERM as "leave the load balancer first".

    Kubernetes sends SIGTERM while the endpoint is still being removed from the Service,
    so for ``shutdown_delay`` seconds the server keeps answering (readiness says 503);
    then uvicorn's own graceful shutdown closes the listener and waits for in-flight
    requests (at most ``graceful_timeout``). A second signal, or Ctrl-C, skips the delay.
    """

    def __init__(self, config: uvicorn.Config, *, runtime: Runtime, delay: float) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._delay = delay

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._delay <= 0 or self._runtime.draining:
            super().handle_exit(sig, frame)
            return
        self._runtime.draining = True
        log.info("SIGTERM: not ready any more; serving %.1fs longer, then draining", self._delay)
        timer = threading.Timer(self._delay, super().handle_exit, args=(sig, frame))
        timer.daemon = True
        timer.start()


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # uvicorn's loggers go through the root handler set up in __main__: one line format.
        log_config=None,
        # Access lines are INFO: below that level, no per-request formatting work for them
        # (uvicorn builds the line's arguments before the logger checks its level).
        access_log=logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),
        timeout_graceful_shutdown=int(settings.graceful_timeout),
        proxy_headers=True,
        server_header=False,
        # uvicorn's httptools protocol, a response's headers and body in one send()
        # (student_api.core.transport; measured in app/README.md).
        http=JoinedWritesProtocol,
    )
    server = DrainingServer(config, runtime=app.state.runtime, delay=settings.shutdown_delay)
    # What exists now (the modules, the app, its routes, models and compiled statements)
    # lives as long as the process: out of the collector's sight, so that its full
    # collections stop walking the whole heap again and again under load (they were ~6 % of
    # the listing's CPU: perf, app/README.md).
    gc.freeze()
    server.run()
