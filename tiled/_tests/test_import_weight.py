"""`import tiled` stays light: no numpy, pandas or zarr (measured in a fresh interpreter)."""

import subprocess
import sys

import pytest

HEAVY = ["numpy", "pandas", "zarr", "dask", "pyarrow", "fastapi", "xarray"]


@pytest.mark.parametrize(
    "module", ["tiled", "tiled.queries", "tiled.errors", "tiled.structures.core"]
)
def test_import_loads_no_heavy_libraries(module):
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == ""
