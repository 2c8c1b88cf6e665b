"""What the processes of one test run share: a pytest plugin (``-p tiled._tests.shared_run`` in
the pytest options), so that it is loaded whatever folder pytest is pointed at.

The suite runs in several worker processes (pytest-xdist). The process that starts them makes
one folder for the run before they start (they inherit :data:`RUN_FOLDER_VARIABLE`) and
removes it when the run ends; :func:`once_per_run` computes in it what costs minutes, such
as a run of upstream's test suite, once for all the workers.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

RUN_FOLDER_VARIABLE = "TILED_TEST_RUN_FOLDER"
_MADE_HERE = pytest.StashKey[Path]()


def run_folder() -> Path:
    """The folder shared by the processes of this test run."""
    given = os.environ.get(RUN_FOLDER_VARIABLE)
    if not given:
        # Used outside a pytest run that loaded this plugin: a folder of this process.
        given = os.environ[RUN_FOLDER_VARIABLE] = tempfile.mkdtemp(prefix="tiled-test-run-")
        atexit.register(shutil.rmtree, given, ignore_errors=True)
    return Path(given)


@contextmanager
def exclusively(name: str) -> Iterator[Path]:
    """Hold the run's lock called ``name`` (other processes of the run that ask wait)."""
    with open(run_folder() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield run_folder()


def once_per_run(name: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` (a JSON value) computed by whichever process of the run asks first; the
    others wait for it and read what it found, or fail (or skip) as it did, without trying
    again: a failure may have taken minutes."""
    with exclusively(name) as folder:
        found = folder / f"{name}.json"
        if not found.exists():
            try:
                outcome = {"value": compute()}
            except pytest.skip.Exception as skipped:
                found.write_text(json.dumps({"skipped": str(skipped)}))
                raise
            except BaseException as error:
                found.write_text(json.dumps({"failed": f"{type(error).__name__}: {error}"}))
                raise
            found.write_text(json.dumps(outcome))
            return outcome["value"]
        outcome = json.loads(found.read_text())
    if "skipped" in outcome:
        pytest.skip(outcome["skipped"])
    if "failed" in outcome:
        pytest.fail(f"{name}, computed by another process of the run: {outcome['failed']}")
    return outcome["value"]


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # a worker: the folder is its starter's
    # A new folder for every run, even if the variable was set: nothing computed is stale.
    folder = Path(tempfile.mkdtemp(prefix="tiled-test-run-"))
    os.environ[RUN_FOLDER_VARIABLE] = str(folder)
    config.stash[_MADE_HERE] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    from .isolated_python import stop_building

    stop_building()  # no build may write into the folder once it is removed
    folder = config.stash.get(_MADE_HERE, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(RUN_FOLDER_VARIABLE, None)
