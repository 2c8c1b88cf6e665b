"""JSON round trips of structures, byte-compatible with upstream Tiled's JSON."""

from __future__ import annotations

import json

import numpy
import pandas
import pytest

from tiled.errors import InvalidDtype, InvalidStructure
from tiled.structures.array import (
    ArrayStructure,
    BuiltinDtype,
    StructDtype,
    data_type_from_json,
    data_type_from_numpy,
)
from tiled.structures.core import Spec, StructureFamily, normalize_specs
from tiled.structures.sparse import COOStructure
from tiled.structures.table import TableStructure

DTYPES = [
    "|b1", "|i1", "<i2", "<i4", "<i8", ">i4", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8",
    ">f8", "<c8", "<c16", "|S3", "<U7", "<M8[ns]", "<M8[D]", "<M8[10s]", "<m8[ns]", "<m8[D]",
]  # fmt: skip
STRUCTURED = [
    [("name", "<U10"), ("age", "<i4"), ("weight", "<f4")],
    [("t", "<M8[us]"), ("xy", "<f8", (2,)), ("inner", [("a", "|u1"), ("b", ">i2")])],
]


def _json_text(obj) -> str:
    return json.dumps(obj.to_json())


@pytest.mark.parametrize("dtype", DTYPES)
def test_builtin_dtype_round_trip(dtype):
    data_type = data_type_from_numpy(dtype)
    assert isinstance(data_type, BuiltinDtype)
    again = data_type_from_json(json.loads(_json_text(data_type)))
    assert again == data_type
    assert again.to_numpy_dtype() == numpy.dtype(dtype)
    assert _json_text(again) == _json_text(data_type)


@pytest.mark.parametrize("descr", STRUCTURED, ids=["pets", "nested"])
def test_struct_dtype_round_trip(descr):
    data_type = data_type_from_numpy(descr)
    assert isinstance(data_type, StructDtype)
    assert data_type.itemsize == numpy.dtype(descr).itemsize
    again = data_type_from_json(json.loads(_json_text(data_type)))
    assert again == data_type
    assert again.to_numpy_dtype() == numpy.dtype(descr)


def test_upstream_json_forms_are_reproduced_exactly():
    assert json.dumps(data_type_from_numpy("<U7").to_json()) == (
        '{"endianness": "little", "kind": "U", "itemsize": 28, "dt_units": null}'
    )
    assert data_type_from_numpy("|b1").to_json()["endianness"] == "not_applicable"
    assert data_type_from_numpy("<M8[ns]").to_json()["dt_units"] == "[ns]"
    pets = data_type_from_numpy(STRUCTURED[0]).to_json()
    assert list(pets) == ["itemsize", "fields"]
    assert pets["itemsize"] == 48
    assert pets["fields"][0] == {
        "name": "name",
        "dtype": {"endianness": "little", "kind": "U", "itemsize": 40, "dt_units": None},
        "shape": None,
    }


def test_array_structure_round_trip_matches_upstream_text():
    upstream = (
        '{"data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": null}, '
        '"chunks": [[250, 250, 250, 250], [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]], '
        '"shape": [1000, 1000], "dims": null, "resizable": false}'
    )
    structure = ArrayStructure.from_json(json.loads(upstream))
    assert structure.shape == (1000, 1000)
    assert json.dumps(structure.to_json()) == upstream


def test_scalar_and_dims_round_trip():
    scalar = ArrayStructure.from_array(numpy.array(3.14159))
    assert scalar.to_json()["chunks"] == [] and scalar.to_json()["shape"] == []
    named = ArrayStructure(data_type_from_numpy("<f8"), [[2], [3]], [2, 3], dims=["x", "y"])
    assert ArrayStructure.from_json(named.to_json()) == named


def test_sparse_structure_round_trip():
    upstream = (
        '{"chunks": [[100], [100]], "shape": [100, 100], '
        '"data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": null}, '
        '"coord_data_type": {"endianness": "little", "kind": "i", "itemsize": 8, "dt_units": null}, '
        '"dims": null, "resizable": false, "layout": "COO"}'
    )
    structure = COOStructure.from_json(json.loads(upstream))
    assert json.dumps(structure.to_json()) == upstream
    legacy = COOStructure.from_json(
        {"chunks": [[3]], "shape": [3], "dims": None, "resizable": False}
    )
    assert legacy.data_type is None and legacy.coord_data_type.kind.value == "u"


def test_table_structure_round_trip():
    df = pandas.DataFrame({"A": numpy.arange(3, dtype="uint8"), "B": [1.0, 2.0, 3.0]})
    structure = TableStructure.from_pandas(df, npartitions=2)
    assert structure.columns == ["A", "B"]
    assert structure.arrow_schema.startswith("data:application/vnd.apache.arrow.file;base64,/////")
    again = TableStructure.from_json(json.loads(_json_text(structure)))
    assert again == structure
    assert list(again.meta.columns) == ["A", "B"]
    assert str(again.arrow_schema_decoded.field("A").type) == "uint8"


def test_spec_and_family():
    assert Spec.from_json({"name": "xarray_dataset", "version": None}) == Spec("xarray_dataset")
    assert normalize_specs(["dataframe"]) == [Spec("dataframe")]
    assert StructureFamily("table") is StructureFamily.table
    with pytest.raises(ValueError, match="Duplicate"):
        normalize_specs(["a", "a"])


@pytest.mark.parametrize("bad", ["<f3", "not-a-dtype", "<i16", "O", "<f8x"])
def test_invalid_dtype_strings_name_the_value(bad):
    with pytest.raises(InvalidDtype, match="Invalid data type"):
        BuiltinDtype.from_string(bad)


@pytest.mark.parametrize(
    "payload",
    [
        {"endianness": "little", "kind": "Z", "itemsize": 8},
        {"endianness": "little", "kind": "f", "itemsize": 3},
        {"endianness": "sideways", "kind": "f", "itemsize": 8},
        {"kind": "f"},
        {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": "[ns]"},
    ],
)
def test_invalid_dtype_json(payload):
    with pytest.raises(InvalidDtype):
        data_type_from_json(payload)


def test_inconsistent_structures_are_refused():
    with pytest.raises(InvalidStructure, match="do not add up"):
        ArrayStructure(data_type_from_numpy("<f8"), [[5, 5]], [11])
    with pytest.raises(InvalidStructure, match="rank"):
        ArrayStructure(data_type_from_numpy("<f8"), [[10]], [10, 2])
