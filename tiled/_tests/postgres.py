"""PostgreSQL for the tests: one place that finds it, makes throw-away databases, and decides
what its absence means.

The server is expected at ``TILED_TEST_POSTGRESQL_URI`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, trust authentication). Where none answers
there (a fresh machine), and the PostgreSQL server binaries (``initdb``, ``pg_ctl``) are
installed, the first test that needs PostgreSQL starts a throwaway cluster in a temporary
directory, on a free loopback port, used for the rest of the session and deleted at exit.
Without the binaries the tests that need PostgreSQL are skipped with the reason. CI sets
``TILED_TEST_REQUIRE_POSTGRESQL=1`` so that a missing server fails instead (and no throwaway
cluster stands in for it).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# The configured server; the one in use is `admin_uri()` (a throwaway cluster's where none
# answers here).
ADMIN_URI = os.environ.get(
    "TILED_TEST_POSTGRESQL_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Where Debian and Ubuntu install the server binaries (not on PATH there).
SERVER_BINARY_GLOB = "/usr/lib/postgresql/*/bin"
# initdb refuses to run as root; as root the cluster is made and run by this user.
UNPRIVILEGED_USER = "postgres"
COMMAND_TIMEOUT = 120


async def _execute(uri: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(uri, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _unreachable(uri: str) -> str | None:
    """Why no server answers at ``uri``, or None if one does."""
    try:
        asyncio.run(_execute(uri, "SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any failure means "no server to test against"
        return f"PostgreSQL is not reachable at {uri} ({type(err).__name__}: {err})"
    return None


@dataclass(frozen=True)
class _Server:
    """The outcome of looking for PostgreSQL: the URI of its administrative database, or why
    there is none."""

    uri: str | None
    reason: str | None = None


@functools.cache
def _server() -> _Server:
    unreachable = _unreachable(ADMIN_URI)
    if unreachable is None:
        return _Server(ADMIN_URI)
    if os.environ.get("TILED_TEST_REQUIRE_POSTGRESQL"):
        return _Server(None, unreachable)  # the configured server is the one required
    binaries = _server_binaries()
    if binaries is None:
        return _Server(
            None,
            f"{unreachable}; no PostgreSQL server binaries (initdb, pg_ctl) were found on PATH "
            f"or in {SERVER_BINARY_GLOB} to start a throwaway cluster",
        )
    try:
        cluster = ThrowawayCluster.start(binaries)
    except ThrowawayClusterError as err:
        return _Server(None, f"{unreachable}; a throwaway cluster could not be started: {err}")
    atexit.register(cluster.stop)
    return _Server(cluster.uri)


def _server_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH first, then the newest version
    in Debian's place), or None."""
    on_path = [shutil.which(name) for name in ("initdb", "pg_ctl")]
    if all(on_path):
        # Their real directory: PATH may hold symlinks, and pg_ctl finds `postgres` beside it.
        return Path(on_path[0]).resolve().parent
    installed = sorted(Path("/").glob(SERVER_BINARY_GLOB.lstrip("/")), key=_version_of)
    for directory in reversed(installed):
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def _version_of(directory: Path) -> tuple[int, ...]:
    version = directory.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class ThrowawayClusterError(Exception):
    """A throwaway cluster could not be made or started."""


@dataclass
class ThrowawayCluster:
    """A PostgreSQL cluster of this test session only: trust authentication, loopback only,
    its unix socket in its own directory (no clash with a system cluster's)."""

    binaries: Path
    directory: Path
    port: int
    run_as: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @classmethod
    def start(cls, binaries: Path) -> ThrowawayCluster:
        run_as = _unprivileged_prefix()
        directory = Path(tempfile.mkdtemp(prefix="tiled-test-postgresql-"))
        cluster = cls(binaries, directory, _free_loopback_port(), run_as)
        try:
            if run_as:
                shutil.chown(directory, UNPRIVILEGED_USER, UNPRIVILEGED_USER)
            cluster._run(
                "initdb", "--pgdata", str(cluster.data), "--username", "postgres",
                "--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
            cluster.resume()
        except ThrowawayClusterError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cluster

    def resume(self) -> None:
        """Start the server (again, after :meth:`halt`)."""
        server_options = (
            f"-p {self.port} -k {shlex.quote(str(self.directory))} "
            "-c listen_addresses=127.0.0.1 "
            # Durability is pointless for a cluster deleted at exit; skipping it is faster.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "start", "--pgdata", str(self.data), "--wait", "--timeout", "60",
            "--log", str(self.directory / "server.log"), "--options", server_options,
        )  # fmt: skip

    def halt(self) -> None:
        """Stop the server as a restart does: every client is disconnected at once, and what
        was committed is kept (an immediate stop would lose it here: commits are not waited
        for, see resume)."""
        self._run("pg_ctl", "stop", "--pgdata", str(self.data), "--mode", "fast")

    def stop(self) -> None:
        """Stop the server (without waiting for clients) and delete the cluster."""
        try:
            self._run("pg_ctl", "stop", "--pgdata", str(self.data), "--mode", "immediate")
        except ThrowawayClusterError:
            pass  # stopped already, or never started: the directory goes either way
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *arguments: str) -> None:
        command = [*self.run_as, str(self.binaries / program), *arguments]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd="/"
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ThrowawayClusterError(f"{program}: {err}") from None
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            log = self.directory / "server.log"
            if log.exists():
                output += "\n" + log.read_text(errors="replace")[-2000:]
            raise ThrowawayClusterError(f"{program} exited with {result.returncode}: {output}")


def _unprivileged_prefix() -> tuple[str, ...]:
    """How to run the server's commands: as they are, or, as root (which initdb refuses), as
    the ``postgres`` user through runuser or su."""
    if os.geteuid() != 0:
        return ()
    import pwd

    try:
        pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise ThrowawayClusterError(
            f"running as root, which initdb refuses, and there is no {UNPRIVILEGED_USER!r} "
            "user to run it as"
        ) from None
    if shutil.which("runuser"):
        return ("runuser", "-u", UNPRIVILEGED_USER, "--")
    if shutil.which("setpriv"):
        return ("setpriv", f"--reuid={UNPRIVILEGED_USER}", f"--regid={UNPRIVILEGED_USER}",
                "--init-groups", "--")  # fmt: skip
    raise ThrowawayClusterError(
        f"running as root, which initdb refuses, and neither runuser nor setpriv is installed "
        f"to run it as {UNPRIVILEGED_USER!r}"
    )


def _free_loopback_port() -> int:
    # Not one the kernel picks: initdb takes seconds before the server binds it, and the
    # server gives it up and takes it again when a test halts and resumes it.
    from .processes import free_port

    return free_port()


def admin_uri() -> str:
    """The administrative database of the server the tests use (skips without one)."""
    require_postgresql()
    return _server().uri


async def admin(statement: str) -> None:
    """Run one statement on the administrative database."""
    await _execute(admin_uri(), statement)


def require_postgresql() -> None:
    """Skip the calling test without PostgreSQL (fail instead where it is required)."""
    reason = _server().reason
    if reason is None:
        return
    if os.environ.get("TILED_TEST_REQUIRE_POSTGRESQL"):
        pytest.fail(f"{reason}; TILED_TEST_REQUIRE_POSTGRESQL is set")
    pytest.skip(reason)


def database_uri(name: str) -> str:
    return admin_uri().rsplit("/", 1)[0] + "/" + name


@contextmanager
def temporary_database(prefix: str = "tiled_test") -> Iterator[str]:
    """The URI of a new, empty database, dropped afterwards."""
    require_postgresql()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield database_uri(name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
