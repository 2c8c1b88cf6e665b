"""Data encoders for tables (pandas DataFrames) and for sparse arrays seen as tables."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _json

if TYPE_CHECKING:
    import pandas
    import sparse

DataEncoder = Callable[[Any, dict[str, Any]], bytes]


def encode_arrow(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    """Arrow IPC *file* format; pyarrow records the pandas index so it round-trips."""
    import pyarrow

    table = pyarrow.Table.from_pandas(frame)
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def encode_parquet(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    import pyarrow
    import pyarrow.parquet

    sink = pyarrow.BufferOutputStream()
    pyarrow.parquet.write_table(pyarrow.Table.from_pandas(frame), sink)
    return sink.getvalue().to_pybytes()


def encode_csv(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    """A header row then the rows; the index is not written."""
    return frame.to_csv(index=False).encode("utf-8")


def _column_jsonable(series: pandas.Series) -> Any:
    import numpy

    if isinstance(series.dtype, numpy.dtype):
        return _json.to_jsonable(series.to_numpy())
    # Extension dtypes (strings, nullable ints, tz-aware times) hold NA, which becomes null.
    return series.to_numpy(dtype=object, na_value=None).tolist()


def encode_json(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    """``{"column": [values, ...], ...}``; the index is not included."""
    columns = {str(name): _column_jsonable(frame[name]) for name in frame.columns}
    return _json.dumps(columns)


def encode_hdf5(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    """One dataset per column at the root; text as variable-length UTF-8."""
    import h5py

    from ._hdf5 import write_attributes, write_table

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        write_attributes(file, metadata)
        write_table(file, frame)
    return buffer.getvalue()


def sparse_to_frame(array: sparse.COO) -> pandas.DataFrame:
    """Columns ``dim0 .. dim{n-1}`` (coordinates) and ``data`` (values), one row per entry."""
    import pandas

    columns = {f"dim{i}": coords for i, coords in enumerate(array.coords)}
    columns["data"] = array.data
    return pandas.DataFrame(columns)


def via_sparse_frame(encoder: DataEncoder) -> DataEncoder:
    """A sparse-array encoder made of a table encoder."""

    def encode_sparse(array: sparse.COO, metadata: dict[str, Any]) -> bytes:
        return encoder(sparse_to_frame(array), metadata)

    encode_sparse.__name__ = f"{encoder.__name__}_of_sparse"
    encode_sparse.__doc__ = f"``{encoder.__name__}`` of the sparse array as a table."
    return encode_sparse
