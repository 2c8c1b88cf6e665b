"""The command line, run as a user runs it: real processes, real ports."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .processes import free_port, running_tiled

TILED = [str(Path(sys.executable).parent / "tiled")]


@contextmanager
def running(*args: str):
    with running_tiled(*args) as (url, _):
        yield url


def test_version():
    result = subprocess.run([*TILED, "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", result.stdout)


@pytest.mark.slow
def test_serve_demo_is_public():
    port = free_port()
    with running("serve", "demo", "--port", str(port)) as url:
        assert url == f"http://localhost:{port}"
        response = httpx.get(f"http://127.0.0.1:{port}/api/v1/metadata/nested/images")
        assert response.status_code == 200
        assert (
            httpx.get(f"http://127.0.0.1:{port}/zarr/v3/zarr.json").json()["node_type"] == "group"
        )


@pytest.mark.slow
def test_serve_pyobject_prints_the_key_and_requires_it():
    port = free_port()
    with running("serve", "pyobject", "tiled.examples.generated:tree", "--port", str(port)) as url:
        key = re.search(r"api_key=([0-9a-f]{64})", url).group(1)
        base = f"http://127.0.0.1:{port}/api/v1/metadata/scalars"
        assert httpx.get(base).status_code == 401
        assert httpx.get(base, headers={"Authorization": f"Apikey {key}"}).status_code == 200
        assert httpx.get(base, params={"api_key": "wrong"}).status_code == 401


@pytest.mark.slow
def test_serve_pyobject_with_given_key_and_public():
    port = free_port()
    with running(
        "serve",
        "pyobject",
        "tiled.examples.generated:tree",
        "--port",
        str(port),
        "--api-key",
        "secret",
        "--public",
    ) as url:
        assert "api_key" not in url
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/metadata/scalars").status_code == 200


@pytest.mark.parametrize(
    "target", ["no.such.module:tree", "tiled.examples.generated:nope", "nocolon"]
)
def test_bad_object_path_is_one_clear_line(target):
    result = subprocess.run(
        [*TILED, "serve", "pyobject", target, "--port", str(free_port())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and target.split(":")[0] in lines[0]


def _one_error_line(args: list[str], cwd: Path) -> str:
    result = subprocess.run([*TILED, *args], capture_output=True, text=True, cwd=cwd)
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_what_the_machine_refuses_is_one_clear_line(tmp_path):
    long_name = "x" * 300  # past the 255 bytes a file name may have
    for args in (
        ["catalog", "init", f"sqlite:///{tmp_path}/{long_name}.db"],
        ["serve", "config", str(tmp_path / long_name)],
        ["admin", "initialize-database", f"sqlite:///{tmp_path}/{long_name}.db"],
    ):
        assert "Error:" in _one_error_line(args, tmp_path), args
    binary = tmp_path / "config.yml"
    binary.write_bytes(bytes(range(256)))
    assert "not a text file" in _one_error_line(["serve", "config", str(binary)], tmp_path)
    for port in ("99999", "-1"):
        refused = _one_error_line(["serve", "demo", "--port", port], tmp_path)
        assert "Invalid value for '--port'" in refused, refused


def test_port_in_use_is_one_clear_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*TILED, "serve", "pyobject", "tiled.adapters.mapping:MapAdapter", "--port", str(port)],
            capture_output=True,
            text=True,
        )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"Error: port {port} on 127.0.0.1 is already in use; choose another with --port"
    )


def test_access_logs_do_not_show_api_keys():
    import logging

    from tiled.server.logging import RedactSecrets

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s"',
        ("127.0.0.1", "GET", "/api/v1/?api_key=abc123&x=1"),
        None,
    )
    RedactSecrets().filter(record)
    assert "abc123" not in record.getMessage() and "api_key=[redacted]&x=1" in record.getMessage()


def test_port_check_lets_a_restart_bind_past_time_wait_but_not_a_listener():
    """Connections an earlier server closed first linger in TIME_WAIT on its port; uvicorn binds
    past them (SO_REUSEADDR), so the serve commands' check must too. A listener still refuses."""
    import socket

    import pytest
    import typer

    from tiled.commandline.serve import _check_port

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    with pytest.raises(typer.Exit):
        _check_port("127.0.0.1", port)  # in use: refused with a message
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end waits in TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    _check_port("127.0.0.1", port)  # the restart may bind
