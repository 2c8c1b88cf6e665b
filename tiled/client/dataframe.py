"""Table clients: partitions read as Arrow, concurrently; writes by partition."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence
from typing import Any

from .base import BaseClient
from .utils import ClientError, path_url

ARROW = "application/vnd.apache.arrow.file"


def _arrow_to_pandas(content: bytes) -> Any:
    from ..serialization.table import deserialize_arrow

    return deserialize_arrow(content)


def _pandas_to_arrow(frame: Any) -> bytes:
    """An Arrow IPC file of a pandas DataFrame, an Arrow table or record batch (as upstream's
    client takes them), or a dict of columns."""
    import pyarrow

    if isinstance(frame, pyarrow.RecordBatch):
        table = pyarrow.Table.from_batches([frame])
    elif isinstance(frame, pyarrow.Table):
        table = frame
    elif isinstance(frame, dict):
        table = pyarrow.table(frame)
    else:
        table = pyarrow.Table.from_pandas(frame)
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def as_partitions(data: Any) -> tuple[list[Any], Any]:
    """The partitions (pandas frames, or dask delayed parts) of a table to write and an empty
    frame with its columns and dtypes."""
    import pandas

    if isinstance(data, dict):
        data = pandas.DataFrame(data)
    if hasattr(data, "to_delayed") and hasattr(data, "npartitions"):  # a dask DataFrame
        return list(data.to_delayed()), data._meta
    if not isinstance(data, pandas.DataFrame):
        raise TypeError(
            f"Expected a pandas or dask DataFrame, or a dict of columns, not {type(data)}"
        )
    if isinstance(data.columns, pandas.MultiIndex):
        raise ValueError(
            "A table's columns have one level of names, not a MultiIndex; flatten them first, "
            "e.g. df.columns = ['_'.join(map(str, c)) for c in df.columns]"
        )
    return [data], data.iloc[:0]


def schema_of(frame: Any, meta: Any) -> Any:
    """The Arrow schema of a table to write: a pandas frame's, its column types read from its
    values (its empty head would make an object column of text or bytes Arrow's null type);
    otherwise (dask's lazy partitions) that of the empty frame ``meta``. Values Arrow cannot
    hold in one column (numbers mixed with text) raise pyarrow's error here, before any node
    is made."""
    import pandas
    import pyarrow

    if not isinstance(frame, pandas.DataFrame):
        return pyarrow.Table.from_pandas(meta.iloc[:0]).schema
    return pyarrow.Schema.from_pandas(frame)


def index_is_row_numbers(structure: Any) -> bool:
    """Whether a table's index is plain row numbers (pandas' unnamed RangeIndex, kept in the
    Arrow schema's pandas metadata rather than as a column). Such an index is not stored with
    each partition, so every partition reads as 0..n; the whole table is renumbered instead,
    as the server's ``/table/full`` does."""
    index = (structure.arrow_schema_decoded.pandas_metadata or {}).get("index_columns") or []
    return not any(isinstance(column, str) for column in index)


def _partition_first(partition: Any, dataframe: Any, method: str) -> tuple[int, Any]:
    """Upstream swapped these arguments once; the old order still works, with a warning."""
    if isinstance(partition, int):
        return partition, dataframe
    import warnings

    warnings.warn(
        f"The order of arguments has changed: please use {method}(partition, dataframe).",
        DeprecationWarning, stacklevel=3,
    )  # fmt: skip
    return dataframe, partition


class DataFrameClient(BaseClient):
    """A table node: ``read()`` gives a pandas DataFrame; ``node["A"]`` a column's array."""

    @property
    def columns(self) -> list[str]:
        return list(self.structure().columns)

    @property
    def npartitions(self) -> int:
        return int(self.structure().npartitions)

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        raise TypeError("len() of a table is not known without reading it; use len(node.read())")

    def __getitem__(self, column: str) -> BaseClient:
        """The column ``column`` as an array client."""
        if not isinstance(column, str):
            raise TypeError(f"Columns are named by text (written as text), not {column!r}")
        path = path_url([*self.path_parts, column])
        try:
            item = self.context.get_json(f"metadata/{path}")["data"]
        except ClientError as error:
            if error.status_code == 404:
                raise KeyError(column) from None
            raise
        return self.client_for_item(item)

    def _params(self, columns: Sequence[str] | None) -> list[tuple[str, str]]:
        return [("column", c) for c in columns or []]

    def read_partition(self, partition: int, columns: Sequence[str] | None = None) -> Any:
        """One partition as a pandas DataFrame."""
        from urllib.parse import urlencode

        if columns is not None and isinstance(columns, str):
            columns = [columns]
        path = f"table/partition/{self._path}"
        params = [("partition", str(partition)), *self._params(columns)]
        if len(self.context.url(path)) + len(urlencode(params)) > self.URL_CHARACTER_LIMIT:
            # Many columns make a URL too long for proxies (and for httpx, past 64 kB): the
            # server takes them as a JSON body instead, as upstream's client sends them.
            content = self.context.request(
                "POST", path, params={"partition": partition}, json=list(columns or []),
                headers={"Accept": ARROW},
            ).content  # fmt: skip
        else:
            content = self.context.get_content(path, params=params, accept=ARROW)
        return _arrow_to_pandas(content)

    def read(self, columns: Sequence[str] | None = None) -> Any:
        """The whole table (or some of its ``columns``) as a pandas DataFrame; partitions are
        fetched concurrently."""
        import pandas

        if columns is not None and isinstance(columns, str):
            columns = [columns]
        count = self.npartitions
        if count == 0:
            meta = self.structure().meta
            return meta[list(columns)] if columns else meta
        if count == 1:
            return self.read_partition(0, columns)
        with concurrent.futures.ThreadPoolExecutor(self.context.max_connections) as pool:
            parts = list(pool.map(lambda i: self.read_partition(i, columns), range(count)))
        return pandas.concat(parts, ignore_index=index_is_row_numbers(self.structure()))

    def write(self, dataframe: Any) -> None:
        """Replace the whole table (one partition)."""
        self.context.request(
            "PUT", f"table/full/{self._path}", content=_pandas_to_arrow(dataframe),
            headers={"Content-Type": ARROW},
        )  # fmt: skip

    def write_partition(self, partition: int, dataframe: Any) -> None:
        """Replace partition ``partition``."""
        partition, dataframe = _partition_first(partition, dataframe, "write_partition")
        if hasattr(dataframe, "compute"):
            dataframe = dataframe.compute()
        self.context.request(
            "PUT", f"table/partition/{self._path}", params={"partition": partition},
            content=_pandas_to_arrow(dataframe), headers={"Content-Type": ARROW},
        )  # fmt: skip

    def append_partition(self, partition: int, dataframe: Any) -> None:
        """Append rows to partition ``partition`` (not retried once sent: appending twice
        would add the rows twice)."""
        partition, dataframe = _partition_first(partition, dataframe, "append_partition")
        self.context.request(
            "PATCH", f"table/partition/{self._path}", params={"partition": partition},
            content=_pandas_to_arrow(dataframe), headers={"Content-Type": ARROW},
        )  # fmt: skip

    def export(
        self,
        filepath: Any,
        columns: Sequence[str] | None = None,
        *,
        format: str | None = None,
        **params: Any,
    ) -> None:
        if columns:
            params["column"] = list(columns)
        super().export(filepath, format=format, **params)

    _export_route = "table/full"

    def subscribe(self, executor: concurrent.futures.Executor | None = None) -> Any:
        """Live updates of this table (rows written or appended): a
        :class:`~tiled.client.stream.TableSubscription`; see the how-to on streaming."""
        from .stream import TableSubscription

        return TableSubscription(self.context, self.path_parts, executor)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.columns}>"


class DaskDataFrameClient(DataFrameClient):
    """A table read lazily: ``read()`` gives a dask DataFrame, one partition per partition."""

    def read(self, columns: Sequence[str] | None = None) -> Any:
        import dask
        import dask.dataframe

        if columns is not None and isinstance(columns, str):
            columns = [columns]
        meta = self.structure().meta
        if columns:
            meta = meta[list(columns)]
        parts = [dask.delayed(self.read_partition)(i, columns) for i in range(self.npartitions)]
        return dask.dataframe.from_delayed(parts, meta=meta) if parts else meta

    def compute(self) -> Any:
        return DataFrameClient.read(self)


__all__ = ["DaskDataFrameClient", "DataFrameClient"]
