"""zarr-python 2.18 (in a virtual environment of its own) reads the /zarr/v2 view."""

from __future__ import annotations

import json

import numpy
import pytest

from .isolated_python import run_isolated

SCRIPT = r"""
import json, sys
import fsspec, zarr
root = zarr.open(fsspec.get_mapper(sys.argv[1] + "/zarr/v2/"), mode="r")
print(json.dumps({
    "version": zarr.__version__,
    "keys": list(root.keys()),
    "tree": str(root.tree()),
    "medium": root["nested/images/medium_image"][10:12, 5:7].tolist(),
    "pi": float(root["scalars/pi"][()]),
    "fsc": str(root["scalars/fsc"][()]),
    "short_A": root["tables/short_table/A"][:].tolist(),
    "pets": [list(map(str, r)) for r in root["structured_data/pets"][:].tolist()],
    "time": str(root["structured_data/xarray_dataset/time"][0]),
    "sparse_sum": float(root["nested/sparse_image"][:].sum()),
    "dims": root["structured_data/xarray_dataset/temperature"].attrs["_ARRAY_DIMENSIONS"],
    "consolidated": len(list(zarr.open_consolidated(fsspec.get_mapper(sys.argv[1] + "/zarr/v2/"), mode="r").group_keys())),
}))
"""


@pytest.mark.slow
def test_zarr_python_2_reads_the_demo_tree(zarr2_python, demo_server, demo_tree):
    result = run_isolated(zarr2_python, SCRIPT, demo_server.url)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["version"].startswith("2.18")
    assert got["keys"] == sorted(demo_tree)  # zarr 2 lists members alphabetically
    assert "tiny_hypercube (50, 50, 50, 50, 50) float64" in got["tree"]
    assert (
        got["medium"] == demo_tree["nested"]["images"]["medium_image"].read()[10:12, 5:7].tolist()
    )
    assert got["pi"] == 3.14159 and got["fsc"] == "1/137"
    assert got["short_A"] == demo_tree["tables"]["short_table"].read()["A"].tolist()
    assert got["pets"] == [["Rex", "9", "81.0"], ["Fido", "3", "27.0"]]
    assert got["time"] == "2014-09-06T00:00:00.000000000"
    sparse_sum = float(demo_tree["nested"]["sparse_image"].read().todense().sum())
    assert got["sparse_sum"] == pytest.approx(sparse_sum)
    assert got["dims"] == ["x", "y", "time"]
    assert got["consolidated"] == 4
    assert numpy.isfinite(got["sparse_sum"])
