"""Ragged array clients: data travel as zipped buffers of the canonical awkward layout
(nested JSON lists for a single element)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..ndslice import NDSlice
from ..utils import Conflicts
from .base import BaseClient
from .utils import detail_of, handle_error

ZIP = "application/zip"
JSON = "application/json"


def _slice_query(slice: Any) -> dict[str, str]:  # noqa: A002
    if slice is None or slice is ...:
        return {}
    return {"slice": NDSlice(slice).to_query()}


class RaggedClient(BaseClient):
    """A ragged array node: ``read()`` (or ``[...]``) gives a ``ragged.array``."""

    @property
    def shape(self) -> tuple[int | None, ...]:
        return self.structure().shape

    @property
    def chunks(self) -> tuple[tuple[int, ...] | None, ...]:
        return self.structure().chunks

    @property
    def size(self) -> int:
        return self.structure().size

    @property
    def dims(self) -> tuple[str, ...] | None:
        return self.structure().dims

    @property
    def dtype(self) -> Any:
        return self.structure().data_type.to_numpy_dtype()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunked(self) -> bool:
        return any(c is not None and len(c) > 1 for c in self.chunks)

    def _put(self, route: str, array: Any, params: dict[str, Any]) -> None:
        from ..serialization.ragged import to_zipped_buffers
        from ..structures.ragged import make_ragged_array

        body = to_zipped_buffers(ZIP, make_ragged_array(array), {})
        self.context.request(
            "PUT", f"{route}/{self._path}", params=params, content=body,
            headers={"Content-Type": ZIP},
        )  # fmt: skip

    def write(self, array: Any, persist: bool = True) -> None:
        """Write the whole array (a ragged, awkward or numpy array, or nested lists)."""
        self._put("ragged/full", array, {} if persist else {"persist": "false"})

    def write_block(self, array: Any, block: int | tuple[int, ...], persist: bool = True) -> None:
        """Write the rows of chunk ``block`` (chunks run along the first dimension)."""
        blocks = (block,) if isinstance(block, int) else tuple(block)
        params = {"block": ",".join(str(int(b)) for b in blocks)}
        if not persist:
            params["persist"] = "false"
        self._put("ragged/block", array, params)

    def patch(
        self,
        array: Any,
        offset: int | tuple[int, ...],
        extend: bool = False,
        persist: bool = True,
    ) -> None:
        """Append ``array``'s rows at ``offset``, which must be the current length, with
        ``extend=True`` (overwriting rows is not supported)."""
        from ..serialization.ragged import to_zipped_buffers
        from ..structures.ragged import RaggedStructure, make_ragged_array

        if not extend or not persist:
            raise NotImplementedError("Only extend=True and persist=True are supported")
        offset = (offset,) if isinstance(offset, int) else tuple(offset)
        if offset[0] != self.shape[0]:
            raise NotImplementedError(
                "Only appending to the end of the leftmost dimension is supported "
                f"(offset {self.shape[0]})"
            )
        array = make_ragged_array(array)
        if array.dtype != self.dtype:
            raise ValueError(
                f"Data given to patch has dtype {array.dtype}, which does not match the "
                f"dtype of this array, {self.dtype}."
            )
        params = {
            "shape": str(array.shape[0]),
            "offset": ",".join(str(int(o)) for o in offset),
            "extend": "true",
        }
        response = self.context.request(
            "PATCH", f"ragged/full/{self._path}", params=params,
            content=to_zipped_buffers(ZIP, array, {}), headers={"Content-Type": ZIP},
            check=False,
        )  # fmt: skip
        if response.status_code in (400, 409):
            detail = detail_of(response).replace("Use ?", "Pass keyword argument ")
            raise (Conflicts if response.status_code == 409 else ValueError)(detail)
        handle_error(response)
        self._structure_cache = RaggedStructure.from_json(response.json())
        self._item["attributes"]["structure"] = response.json()

    def read(self, slice: Any = None) -> Any:  # noqa: A002
        """The array, or the part ``slice`` selects (sliced by the server)."""
        import orjson
        import ragged

        from ..serialization.ragged import from_zipped_buffers

        params = _slice_query(slice)
        scalar = self.ndim == 0 or (slice not in (None, ...) and _picks_one(slice, self.ndim))
        content = self.context.get_content(
            f"ragged/full/{self._path}", params=params, accept=JSON if scalar else ZIP
        )
        if scalar:
            return ragged.array(orjson.loads(content))
        return from_zipped_buffers(content)

    def __getitem__(self, slice: Any) -> Any:  # noqa: A002
        return self.read(slice)

    def export(
        self, filepath: str | Path | Any, *, slice: Any = None, format: str | None = None
    ) -> None:
        """Write the array (or ``slice`` of it) to ``filepath`` in ``format``."""
        media_type = self._export_media_type(filepath, format)
        content = self.context.get_content(
            f"ragged/full/{self._path}", params={"format": media_type, **_slice_query(slice)}
        )
        if hasattr(filepath, "write"):
            filepath.write(content)
            return
        with open(filepath, "wb") as file:
            file.write(content)

    def __repr__(self) -> str:
        parts = f"shape={self.shape} size={self.size} chunks={self.chunks} dtype={self.dtype}"
        if self.dims:
            parts += f" dims={self.dims}"
        return f"<{type(self).__name__} {parts}>"


def _picks_one(slice: Any, ndim: int) -> bool:  # noqa: A002
    """Whether ``slice`` is an integer for every dimension (one element)."""
    parts = slice if isinstance(slice, tuple) else (slice,)
    return len(parts) == ndim and all(isinstance(p, int) for p in parts)


__all__ = ["RaggedClient"]
