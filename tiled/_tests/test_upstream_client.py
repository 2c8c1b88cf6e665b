"""Upstream Tiled's own Python client (PyPI tiled[client] 0.2.16) reads this server.

The upstream package is also named ``tiled``, so it lives in a virtual environment of its own
and runs as a subprocess against a live server of ours.
"""

from __future__ import annotations

import json

import pytest

from .isolated_python import run_isolated

SCRIPT = r"""
import json, sys
from tiled.client import from_uri
from tiled.queries import Key
c = from_uri(sys.argv[1])
ds = c["structured_data"]["xarray_dataset"].read()
print(json.dumps({
    "root_keys": list(c),
    "medium_slice": c["nested"]["images"]["medium_image"][10:12, 5:7].tolist(),
    "pi": float(c["scalars"]["pi"].read()),
    "fsc": str(c["scalars"]["fsc"].read()),
    "pets": c["structured_data"]["pets"].read().tolist(),
    "short_table_A": c["tables"]["short_table"].read()["A"].tolist(),
    "long_table_len": len(c["tables"]["long_table"].read()),
    "ds_vars": sorted(ds.data_vars),
    "ds_temperature": ds["temperature"].values.tolist(),
    "sparse_nnz": int(c["nested"]["sparse_image"].read().nnz),
    "red": list(c["tables"].search(Key("color") == "red")),
    "column": c["tables"]["short_table"]["B"].read().tolist(),
}))
"""


@pytest.mark.slow
def test_upstream_client_browses_and_reads(upstream_client_python, demo_server, demo_tree):
    result = run_isolated(upstream_client_python, SCRIPT, demo_server.url)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["root_keys"] == list(demo_tree)
    medium = demo_tree["nested"]["images"]["medium_image"].read()
    assert got["medium_slice"] == medium[10:12, 5:7].tolist()
    assert got["pi"] == 3.14159 and got["fsc"] == "1/137"
    assert got["pets"] == [["Rex", 9, 81.0], ["Fido", 3, 27.0]]
    short = demo_tree["tables"]["short_table"].read()
    assert got["short_table_A"] == short["A"].tolist() and got["column"] == short["B"].tolist()
    assert got["long_table_len"] == 100_000
    assert got["ds_vars"] == ["precipitation", "temperature"]
    assert (
        got["ds_temperature"]
        == demo_tree["structured_data"]["xarray_dataset"]["temperature"].read().tolist()
    )
    assert got["sparse_nnz"] == 1001
    assert got["red"] == ["short_table", "wide_table"]
