"""Imports, measured in fresh interpreters: ``import tiled`` and the command line stay light
(no numpy, pandas or zarr), and every public module of the package imports without error.

That ``import tiled.client`` loads no server module is checked in ``test_client.py``.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ["numpy", "pandas", "zarr", "dask", "pyarrow", "fastapi", "xarray"]

# Modules that only run inside a tool that prepares them, with why.
NOT_IMPORTABLE_ALONE = {
    "tiled.authn_database.migrations.env": "alembic's environment script: alembic runs it",
    "tiled.catalog.migrations.env": "alembic's environment script: alembic runs it",
}

# Run in one fresh interpreter: walks the package (descending only into public packages that
# imported), imports each public module (no part of its name starts with "_"), and prints
# {"imported": [...], "failed": {module: error}} as JSON.
IMPORT_EVERY_PUBLIC_MODULE = """
import importlib, json, pkgutil, sys, traceback

skipped = set(json.loads(sys.argv[1]))
imported, failed = [], {}


def walk(package):
    for info in sorted(pkgutil.iter_modules(package.__path__, package.__name__ + "."),
                       key=lambda info: info.name):
        if info.name.rpartition(".")[2].startswith("_") or info.name in skipped:
            continue
        try:
            module = importlib.import_module(info.name)
        except BaseException:
            failed[info.name] = traceback.format_exc(limit=-3)
            continue
        imported.append(info.name)
        if info.ispkg:
            walk(module)


import tiled

walk(tiled)
print(json.dumps({"imported": imported, "failed": failed}))
"""


@pytest.mark.parametrize(
    "module",
    [
        "tiled",
        "tiled.queries",
        "tiled.errors",
        "tiled.structures.core",
        "tiled.structures.json",
        # The command line: `tiled --help` and every process a command starts pay for it.
        "tiled.commandline.main",
    ],
)
def test_import_loads_no_heavy_libraries(module):
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == ""


def test_every_public_module_imports():
    skipped = json.dumps(sorted(NOT_IMPORTABLE_ALONE))
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_PUBLIC_MODULE, skipped],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    failures = "\n".join(f"{name}:\n{error}" for name, error in report["failed"].items())
    assert not report["failed"], failures
    # The walk reached every layer (a walk that silently stopped early would pass too).
    for module in ("tiled.client.context", "tiled.server.app", "tiled.catalog.adapter"):
        assert module in report["imported"]
