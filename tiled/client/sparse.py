"""Sparse array clients: COO data travels as Arrow tables (``dim0``, ..., ``data``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .array import _query, normalize_key
from .base import BaseClient
from .dataframe import ARROW, _arrow_to_pandas, _pandas_to_arrow


class SparseClient(BaseClient):
    """A sparse array node: ``read()`` gives a ``sparse.COO``."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.structure().shape)

    @property
    def dims(self) -> list[str] | None:
        dims = self.structure().dims
        return list(dims) if dims is not None else None

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self.structure().chunks)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _coo(self, content: bytes, shape: tuple[int, ...]) -> Any:
        import numpy
        import sparse

        frame = _arrow_to_pandas(content)
        coords = (
            numpy.stack([frame[f"dim{i}"].to_numpy() for i in range(len(shape))])
            if shape
            else numpy.empty((0, len(frame)), dtype=int)
        )
        return sparse.COO(coords, frame["data"].to_numpy(), shape=shape)

    def read(self, slice: Any = ...) -> Any:  # noqa: A002
        parts, shape = normalize_key(slice, self.shape)
        params = {} if slice is ... else {"slice": _query(parts)}
        content = self.context.get_content(f"array/full/{self._path}", params=params, accept=ARROW)
        return self._coo(content, shape)

    def __getitem__(self, key: Any) -> Any:
        return self.read(key)

    def read_block(self, block: Sequence[int], slice: Any = ...) -> Any:  # noqa: A002
        from ..ndslice import NDBlock

        region = NDBlock(*block).slices(self.chunks)
        parts, shape = normalize_key(slice, tuple(r.stop - r.start for r in region))
        params = {"block": ",".join(map(str, block))}
        if slice is not ...:
            params["slice"] = _query(parts)
        content = self.context.get_content(f"array/block/{self._path}", params=params, accept=ARROW)
        return self._coo(content, shape)

    def todense(self) -> Any:
        return self.read().todense()

    def _body(self, coords: Any, data: Any) -> bytes:
        import numpy
        import pandas

        coords = numpy.asarray(coords)
        columns = {f"dim{i}": coords[i] for i in range(coords.shape[0])}
        columns["data"] = numpy.asarray(data)
        return _pandas_to_arrow(pandas.DataFrame(columns))

    def write(self, coords: Any, data: Any) -> None:
        self.context.request(
            "PUT", f"array/full/{self._path}", content=self._body(coords, data),
            headers={"Content-Type": ARROW},
        )  # fmt: skip

    def write_block(self, coords: Any, data: Any, block: Sequence[int]) -> None:
        self.context.request(
            "PUT", f"array/block/{self._path}", params={"block": ",".join(map(str, block))},
            content=self._body(coords, data), headers={"Content-Type": ARROW},
        )  # fmt: skip

    _export_route = "array/full"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape}>"


__all__ = ["SparseClient"]
