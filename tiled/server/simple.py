"""Servers in a background thread of this process: :class:`BackgroundServer` for any app, and
:class:`SimpleTiledServer`, a throw-away writable catalog for tests and notebooks."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any


class BackgroundServer:
    """uvicorn serving ``app`` on loopback in a daemon thread (port 0: any free port)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.host = host

    def start(self, timeout: float = 30) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("The server did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout)


def _stop(server: BackgroundServer, directory: Path | None) -> None:
    server.stop()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


async def _any_url(registration: Any) -> None:
    """Webhook targets of a local server are not checked (upstream's choice there too)."""


class SimpleTiledServer:
    """A Tiled server with a new writable SQLite catalog, running until :meth:`close`.

    ``directory`` holds the catalog (``catalog.db``) and written data (``data/``); by default a
    temporary directory, removed on close. ``api_key`` defaults to a random one;
    ``server.uri`` carries it, so ``from_uri(server.uri)`` connects. ``readable_storage``: a
    directory (or a list of them) whose files may be registered. ``port`` 0: any free port.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        api_key: str | None = None,
        port: int = 0,
        readable_storage: str | Path | list[str | Path] | None = None,
        enable_webhooks: bool = False,
    ):
        from urllib.parse import quote_plus

        from ..catalog import from_uri as catalog_from_uri
        from ..catalog.storage import local_tabular_storage
        from .app import build_app

        self._temporary = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="tiled-simple-"))
            if directory is None
            else Path(directory).resolve()
        )
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        if isinstance(readable_storage, str | os.PathLike):
            readable_storage = [readable_storage]  # one directory may be given as itself
        self.api_key = api_key or secrets.token_hex(32)
        # With webhooks: the key their secrets are stored under (upstream's attribute).
        self.webhook_secret_key = secrets.token_hex(32) if enable_webhooks else None
        self.catalog = catalog_from_uri(
            f"sqlite:///{self.directory / 'catalog.db'}",
            # Files for arrays and sparse arrays; an SQL database for appendable tables.
            writable_storage=[data, local_tabular_storage(self.directory, "storage")],
            readable_storage=[Path(p) for p in readable_storage or []],
            init_if_not_exists=True,
        )
        # Live updates (node.subscribe()) kept in this process, as upstream's simple server.
        server_settings: dict[str, Any] = {"streaming_cache": {"uri": "memory"}}
        validator = None
        if enable_webhooks:
            server_settings["webhooks"] = {"secret_keys": [self.webhook_secret_key]}
            validator = _any_url  # a local server for local receivers (http://localhost:9000)
        self.app = build_app(
            self.catalog,
            authentication={"single_user_api_key": self.api_key},
            server_settings=server_settings,
            webhook_url_validator=validator,
        )
        self._server = BackgroundServer(self.app, port=port).start()
        self.port = self._server.port
        base = f"http://{self._server.host}:{self.port}"
        self.uri = f"{base}/api/v1?api_key={quote_plus(self.api_key)}"
        # The server's page for a browser (the key lets a browser's requests authenticate).
        self.web_ui_link = f"{base}?api_key={quote_plus(self.api_key)}"
        # Stopped and cleaned up when closed, forgotten, or at the latest when Python exits.
        self._finalizer = weakref.finalize(
            self, _stop, self._server, self.directory if self._temporary else None
        )

    def close(self) -> None:
        """Stop the server (and remove its temporary directory); closing twice is harmless."""
        self._finalizer()

    def __enter__(self) -> SimpleTiledServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uri!r} at {str(self.directory)!r}>"

    def _repr_html_(self) -> str:
        # Jupyter's rendering: the links, escaped (a directory name may hold anything).
        from html import escape

        link = escape(self.web_ui_link, quote=True)
        return (
            "<table>"
            f'<tr><td>Web page</td><td><a href="{link}">{link}</a></td></tr>'
            f"<tr><td>API</td><td><code>{escape(self.uri)}</code></td></tr>"
            f"<tr><td>Directory</td><td><code>{escape(str(self.directory))}</code></td></tr>"
            "</table>"
        )


__all__ = ["BackgroundServer", "SimpleTiledServer"]
