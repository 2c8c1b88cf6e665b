"""Deterministic tokens of the objects adapters hold (upstream's ``tiled.server.etag``).

Tokens come from dask's ``tokenize``. For an object dask does not know, dask falls back to a
random token, which would change the ETag of the same data on every request; an HDF5 dataset
is such an object, so it is taught here: a dataset of a file on disk is named by the file's
identity (as :mod:`tiled.adapters.files` tags bytes read from a file) and its path inside it.
"""

from __future__ import annotations

from typing import Any

try:
    from dask.tokenize import normalize_object, normalize_token
    from dask.tokenize import tokenize as _dask_tokenize
except ImportError:  # dask before 2024.9 kept them in dask.base
    from dask.base import normalize_object, normalize_token  # type: ignore[no-redef]
    from dask.base import tokenize as _dask_tokenize  # type: ignore[no-redef]


def tokenize(obj: Any) -> str:
    """A hex token that is equal for equal content (and for the same unchanged file)."""
    return _dask_tokenize(obj)


@normalize_token.register_lazy("h5py")
def _register_h5py() -> None:
    # Runs the first time dask meets an h5py object, so h5py is not imported before then.
    import os

    import h5py

    from ..adapters.files import file_identity

    @normalize_token.register(h5py.Dataset)
    def _normalize_dataset(dataset: h5py.Dataset) -> Any:
        filename = dataset.file.filename
        if os.path.isabs(filename) and os.path.isfile(filename):
            return ("h5py.Dataset", filename, file_identity(os.stat(filename)), dataset.name)
        # An in-memory file (or one opened by a relative name): no identity to rely on.
        return normalize_object(dataset)
