"""Awkward array clients: a read fetches only the buffers that its slice touches."""

from __future__ import annotations

from typing import Any

from .base import BaseClient

ZIP = "application/zip"


class AwkwardClient(BaseClient):
    """An awkward array node: ``read()`` (or ``[...]``) gives an ``awkward.Array``."""

    @property
    def length(self) -> int:
        return self.structure().length

    def __len__(self) -> int:
        return self.length

    def write(self, container: dict[str, Any]) -> None:
        """Replace all buffers (as named by ``awkward.to_buffers``)."""
        from ..serialization.awkward import zip_buffers

        self.context.request(
            "PUT", f"awkward/full/{self._path}", content=zip_buffers(container),
            headers={"Content-Type": ZIP},
        )  # fmt: skip

    def read(self, slice: Any = ...) -> Any:  # noqa: A002
        """The array, or ``array[slice]``: the buffers the slice touches are found with
        awkward's typetracer and only they are fetched."""
        import awkward

        from ..serialization.awkward import unzip_buffers
        from ..structures.awkward import project_form

        structure = self.structure()
        form = structure.awkward_form
        tracer, report = awkward.typetracer.typetracer_with_report(form)
        awkward.typetracer.touch_data(awkward.Array(tracer)[slice])
        touched = set(report.data_touched)
        projected = project_form(form, touched)
        # POST: a request naming many form keys would not fit in a URL.
        response = self.context.request(
            "POST", f"awkward/buffers/{self._path}", json=sorted(touched),
            headers={"Accept": ZIP},
        )  # fmt: skip
        buffers = unzip_buffers(response.content)
        array = awkward.from_buffers(
            projected, structure.length, buffers, allow_noncanonical_form=True
        )
        return array[slice]

    def __getitem__(self, slice: Any) -> Any:  # noqa: A002
        return self.read(slice)

    _export_route = "awkward/full"

    def __repr__(self) -> str:
        form = self.structure().form
        fields = form.get("fields") if form.get("class") == "RecordArray" else None
        if not fields:
            return f"<{type(self).__name__} length={self.length}>"
        shown = ", ".join(fields[:5]) + (", ..." if len(fields) > 5 else "")
        return f"<{type(self).__name__} {{{shown}}} length={self.length}>"


__all__ = ["AwkwardClient"]
