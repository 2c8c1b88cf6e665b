"""Helpers shared by tests (upstream Tiled's test modules import ``Server`` from here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


class Server(uvicorn.Server):
    """A uvicorn server that can run in a background thread for the length of a ``with`` block.

    ``config.port`` 0 picks a free port; the yielded URL names the port actually bound.
    """

    @contextmanager
    def run_in_thread(self, timeout: float = 30) -> Iterator[str]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + timeout
            while not self.started:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError("uvicorn did not start")
                time.sleep(0.01)
            port = self.servers[0].sockets[0].getsockname()[1]
            yield f"http://{self.config.host}:{port}"
        finally:
            self.should_exit = True
            thread.join(timeout=timeout)
