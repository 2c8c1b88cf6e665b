"""Data encoders for tables (pandas DataFrames) and for sparse arrays seen as tables."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _json

if TYPE_CHECKING:
    import pandas
    import sparse

DataEncoder = Callable[[Any, dict[str, Any]], bytes]


def _arrow_table(frame: pandas.DataFrame, format_name: str) -> Any:
    """``frame`` as an Arrow table; 406 for columns Arrow cannot type (values of mixed kinds,
    as a spreadsheet column may hold), which other formats (JSON, CSV) still carry."""
    import pyarrow

    from ..errors import UnsupportedMediaType

    try:
        return pyarrow.Table.from_pandas(frame)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, pyarrow.ArrowNotImplementedError) as err:
        raise UnsupportedMediaType(
            f"This table cannot be written as {format_name}: {err}. JSON or CSV can hold it."
        ) from None


def encode_arrow(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    """Arrow IPC *file* format; pyarrow records the pandas index so it round-trips."""
    import pyarrow

    table = _arrow_table(frame, "Arrow")
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def __getattr__(name: str) -> Any:
    # Upstream's modules expose the default registry; imported late, as the registry
    # imports this module.
    if name == "default_serialization_registry":
        from . import default_serialization_registry

        return default_serialization_registry
    raise AttributeError(name)


def deserialize_arrow(buffer: bytes | memoryview) -> pandas.DataFrame:
    """The table in an Arrow IPC file (what :func:`encode_arrow` writes), as pandas."""
    import pyarrow

    return pyarrow.ipc.open_file(pyarrow.py_buffer(buffer)).read_pandas()


def encode_parquet(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    import pyarrow
    import pyarrow.parquet

    sink = pyarrow.BufferOutputStream()
    pyarrow.parquet.write_table(_arrow_table(frame, "Parquet"), sink)
    return sink.getvalue().to_pybytes()


def encode_csv(
    frame: pandas.DataFrame, metadata: dict[str, Any], parameters: dict[str, str] | None = None
) -> bytes:
    """A header row then the rows; the index is not written. The media type parameter
    ``header=absent`` (RFC 4180's) leaves the header row out."""
    header = (parameters or {}).get("header", "present").lower() != "absent"
    return frame.to_csv(index=False, header=header).encode("utf-8")


def encode_excel(frame: pandas.DataFrame, metadata: dict[str, Any]) -> bytes:
    """An Excel workbook (one sheet, a header row, no index), written by openpyxl."""
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False)
    return buffer.getvalue()


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


def encode_json_seq(frame: pandas.DataFrame, metadata: dict[str, Any]) -> Iterator[bytes]:
    """RFC 7464 JSON text sequence: each row a ``{"column": value}`` object after a record
    separator (0x1E) and followed by a line feed, so that even one row is not mistaken for one
    JSON document. Rows are encoded as they are sent; an empty table sends nothing."""
    names = [str(name) for name in frame.columns]
    columns = [_column_jsonable(frame[name]) for name in frame.columns]
    for row in zip(*columns, strict=True):
        yield b"\x1e" + _json.dumps(dict(zip(names, row, strict=True))) + b"\n"


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
    """A sparse-array encoder made of a table encoder (and taking the same extra arguments,
    such as media type parameters)."""

    def encode_sparse(array: sparse.COO, metadata: dict[str, Any], *args: Any) -> Any:
        return encoder(sparse_to_frame(array), metadata, *args)

    encode_sparse.__name__ = f"{encoder.__name__}_of_sparse"
    encode_sparse.__doc__ = f"``{encoder.__name__}`` of the sparse array as a table."
    return encode_sparse
