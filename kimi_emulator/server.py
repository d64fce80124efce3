"""Running the emulator as a real HTTP server on a background thread."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_emulator_app
from .state import EmulatorState

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


class _QuietRequestHandler(WSGIRequestHandler):
    """Logs each request at debug level, so test and benchmark output stays readable."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug('"%s" %s %s', self.requestline, code, size)


class EmulatorServer:
    """The emulator on ``host:port`` (port 0 picks a free one), served from a daemon thread."""

    def __init__(
        self,
        state: EmulatorState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        app: Flask | None = None,
    ) -> None:
        self.state = state or EmulatorState()
        self.app = app  # another app to serve (a capture's replay) instead of the emulator
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``; known once started."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> EmulatorServer:
        """Bind and serve in the background; returns self."""
        if self._server is not None:
            raise RuntimeError("the emulator is already started")
        app = self.app or create_emulator_app(self.state)
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=_QuietRequestHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"kimi-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        log.info("Kimi emulator listening on %s", self.url)
        return self

    def wait(self) -> None:
        """Block until the server stops (in short joins, so Ctrl-C gets through)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        """Stop serving and release the port; streams still open are abandoned."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
