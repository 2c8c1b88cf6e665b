"""Tiled: serve trees of scientific data over HTTP, natively and as zarr stores.

Importing this package is deliberately cheap: it loads no numpy, pandas or zarr.
"""

from ._version import __version__, __version_tuple__

__all__ = ["__version__", "__version_tuple__"]
