"""A Python of its own for third-party clients whose package names clash with ours.

Each set of requirements is built once per test run, whoever asks first, and the run starts
building the ones its collected tests will need in the background (:func:`prepare`, called by
``conftest.py``): by the time a test asks, the environment is usually ready. The worker
processes of a run share them: they live in the run's folder (``shared_run``), or in the
folder named by :data:`ROOT_VARIABLE`, which keeps them between runs; one per set of
requirements and Python, built under a file lock.

uv (a test dependency) installs them: a few seconds apiece where pip takes most of a minute of
CPU, which the suite's other tests would wait for on a machine of two cores. Without uv, pip
does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import venv
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .shared_run import run_folder

ROOT_VARIABLE = "TILED_TEST_PYTHONS"

# Two at a time: an installer is half waiting on files, and the tests keep running beside it.
_BUILDERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="isolated-python")
_BUILDS: dict[tuple[str, ...], Future] = {}
# The builders' task of each build that ``prepare`` queued: a test that needs one no builder
# has started yet (both busy, or waiting on another process' lock) builds it itself.
_QUEUED: dict[tuple[str, ...], Future] = {}
_LOCK = threading.Lock()


def _root() -> Path:
    given = os.environ.get(ROOT_VARIABLE)
    if not given:
        return run_folder()
    root = Path(given).expanduser().resolve()  # absolute: the builds run from their own folder
    root.mkdir(parents=True, exist_ok=True)
    return root


def stop_building() -> None:
    """Cancel the builds not started and wait for those under way (at the end of a run)."""
    _BUILDERS.shutdown(wait=True, cancel_futures=True)


def _uv() -> str | None:
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    return find_uv_bin()


def _build(directory: Path, requirements: tuple[str, ...]) -> Path:
    python = directory / "bin" / "python"
    ready = directory / ".built"
    with open(directory.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process of this run may be building it
        if ready.exists():
            return python
        shutil.rmtree(directory, ignore_errors=True)  # what a failed build left
        uv = _uv()
        venv.create(directory, with_pip=uv is None)
        if uv is None:
            install = [python, "-m", "pip", "install", "-q"]
        else:
            # Not compiled now (as pip would): a whole environment costs half a minute of CPU,
            # the modules the tests import a third of that, once, at their first import.
            install = [uv, "pip", "install", "-q", "--python", python]
        subprocess.run([*install, *requirements], check=True, timeout=900, cwd=directory)
        ready.touch()
    return python


def _directory(requirements: tuple[str, ...]) -> Path:
    # A kept folder may outlive the Python that built an environment.
    made_of = "\n".join([sys.version, sys.base_prefix, *requirements])
    return _root() / f"env-{hashlib.sha256(made_of.encode()).hexdigest()[:16]}"


def _claim(requirements: tuple[str, ...]) -> tuple[Future, Path | None]:
    """This process' build of ``requirements``, and a directory when the caller must build it
    (the first to ask here, or the first to need a build still queued); the lock is held only
    to look up and claim."""
    with _LOCK:
        future = _BUILDS.get(requirements)
        if future is None:
            future = _BUILDS[requirements] = Future()
            return future, _directory(requirements)
        queued = _QUEUED.pop(requirements, None)
        if queued is not None and queued.cancel():
            return future, _directory(requirements)
        return future, None


def _build_into(future: Future, directory: Path, requirements: tuple[str, ...]) -> None:
    try:
        future.set_result(_build(directory, requirements))
    except BaseException as error:  # noqa: BLE001 - kept for everyone who waits on it
        future.set_exception(error)


def prepare(*requirements: str) -> None:
    """Start building an environment with ``requirements`` in the background."""
    key = tuple(requirements)
    with _LOCK:
        if key in _BUILDS:
            return
        future = _BUILDS[key] = Future()
        _QUEUED[key] = _BUILDERS.submit(_build_into, future, _directory(key), key)


def isolated_python(*requirements: str) -> Path:
    """The python of an environment holding ``requirements`` (built now unless it was built or
    its build started earlier in the run)."""
    future, directory = _claim(tuple(requirements))
    if directory is not None:
        _build_into(future, directory, tuple(requirements))
    return future.result()


def run_isolated(python: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``script`` with ``-I`` from the environment's own folder, so our ``tiled`` is hidden."""
    return subprocess.run(
        [python, "-I", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=python.parent,
    )
