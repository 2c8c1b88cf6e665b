"""xarray datasets (nodes with the ``xarray_dataset`` spec), read through the zarr view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .container import Container


class DatasetClient(Container):
    """A container holding an xarray dataset's variables; ``read()`` gives the dataset."""

    def read(
        self, variables: Sequence[str] | None = None, *, optimize_wide_table: bool = True
    ) -> Any:
        """The dataset (or the ``variables`` named, with their coordinates), loaded."""
        return self._open(variables).load()

    def _open(self, variables: Sequence[str] | None) -> Any:
        import xarray

        dataset = xarray.open_zarr(self.zarr_store(3), consolidated=False, zarr_format=3)
        if variables is not None:
            dataset = dataset[list(variables)]
        # zarr lists a group's members in whatever order their documents arrive; give the
        # variables the node's order (the dataset's own, as written), as upstream does.
        rank = {name: i for i, name in enumerate(self._variable_order())}

        def ordered(names: Any) -> list[Any]:
            return sorted(names, key=lambda name: rank.get(name, len(rank)))

        result = xarray.Dataset(
            {name: dataset.variables[name] for name in ordered(dataset.data_vars)},
            coords={name: dataset.variables[name] for name in ordered(dataset.coords)},
            attrs=dataset.attrs,
        )
        result.encoding = dataset.encoding
        return result

    def _variable_order(self) -> list[str]:
        # Servers inline a dataset's few variables in its structure; else list them.
        contents = (self._item["attributes"].get("structure") or {}).get("contents")
        return list(contents) if contents else list(self)


class DaskDatasetClient(DatasetClient):
    """An xarray dataset read lazily (dask arrays over the zarr chunks)."""

    def read(
        self, variables: Sequence[str] | None = None, *, optimize_wide_table: bool = True
    ) -> Any:
        return self._open(variables)


def write_xarray_dataset(parent: Container, dataset: Any, key: str | None = None) -> DatasetClient:
    """Store an ``xarray.Dataset`` under ``parent``: a container with the ``xarray_dataset``
    spec holding each variable (data variables, then coordinates) as an array with its dims."""
    node = parent.create_container(
        key=key, metadata={"attrs": dict(dataset.attrs)}, specs=["xarray_dataset"]
    )
    for name, variable in {**dataset.data_vars, **dataset.coords}.items():
        spec = "xarray_coord" if name in dataset.coords else "xarray_data_var"
        node.write_array(
            variable.data, key=str(name), dims=[str(d) for d in variable.dims],
            metadata={"attrs": dict(variable.attrs)}, specs=[spec],
        )  # fmt: skip
    return node.refresh()  # type: ignore[return-value]


__all__ = ["DaskDatasetClient", "DatasetClient", "write_xarray_dataset"]
