"""xarray datasets (nodes with the ``xarray_dataset`` spec).

A dataset whose variables are all one-dimensional (a wide table of columns) is read in one
request per role, data variables then coordinates, as Arrow tables from ``/container/full``;
any other dataset is read through the zarr view, each variable's chunks concurrently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from .container import Container

# Columns at least this long are read through the zarr view instead (upstream's limit).
LENGTH_LIMIT_FOR_WIDE_TABLE_OPTIMIZATION = 1_000_000
ROLES = ("xarray_data_var", "xarray_coord")
ARROW = "application/vnd.apache.arrow.file"


class DatasetClient(Container):
    """A container holding an xarray dataset's variables; ``read()`` gives the dataset."""

    def read(
        self, variables: Sequence[str] | None = None, *, optimize_wide_table: bool = True
    ) -> Any:
        """The dataset (or the ``variables`` named, with their coordinates), loaded.

        ``optimize_wide_table=False`` reads one-dimensional variables one by one too."""
        if optimize_wide_table:
            dataset = self._read_as_tables(variables)
            if dataset is not None:
                return dataset
        return self._open(variables).load()

    def _read_as_tables(self, variables: Sequence[str] | None) -> Any:
        """The dataset read as one table per role, or None when it is not a wide table (a
        variable of another rank, too long, or one role's variables along different dims)."""
        import xarray

        by_role: dict[str, list[tuple[str, Any]]] = {role: [] for role in ROLES}
        for name, child in self.items():
            if variables is not None and name not in variables:
                continue
            shape = child.structure().shape
            role = next((spec.name for spec in child.specs if spec.name in by_role), None)
            if role is None or len(shape) != 1:
                return None
            if shape[0] >= LENGTH_LIMIT_FOR_WIDE_TABLE_OPTIMIZATION:
                return None
            by_role[role].append((name, child))
        for members in by_role.values():
            # The server flattens a role's variables into one table along their shared dim.
            if len({tuple(child.dims or ()) for _, child in members}) > 1:
                return None
        built: dict[str, dict[str, Any]] = {}
        for role, members in by_role.items():
            columns = self._fetch_columns([name for name, _ in members]) if members else {}
            built[role] = {
                # Arrow gives text as objects: back to the node's own dtype.
                name: xarray.Variable(
                    child.dims,
                    columns[name].astype(child.dtype, copy=False),
                    attrs=child.metadata.get("attrs") or {},
                )
                for name, child in members
            }
        return xarray.Dataset(
            built["xarray_data_var"],
            coords=built["xarray_coord"],
            attrs=self.metadata.get("attrs") or {},
        )

    def _fetch_columns(self, names: list[str]) -> dict[str, Any]:
        """Variables ``names`` as numpy arrays, in one request (a POST when naming them all
        would make the URL too long for proxies)."""
        from ..serialization.table import deserialize_arrow

        path = f"container/full/{self._path}"
        params = [("format", ARROW), *(("field", name) for name in names)]
        if len(self.context.url(path)) + len(urlencode(params)) > self.URL_CHARACTER_LIMIT:
            content = self.context.request(
                "POST", path, params={"format": ARROW}, json=names
            ).content
        else:
            content = self.context.get_content(path, params=params, accept=ARROW)
        # The index holds the dimension coordinate, when it was among the names.
        frame = deserialize_arrow(content).reset_index()
        return {name: frame[name].to_numpy() for name in names}

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
