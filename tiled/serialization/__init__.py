"""Encoding nodes into media types for ``/api/v1`` data routes, and content negotiation.

``default_serialization_registry`` holds the built-in encoders; build another
:class:`SerializationRegistry` (optionally with :func:`register_defaults`) to add or replace
encoders. Heavy libraries (h5py, Pillow, tifffile, pyarrow, xarray, zarr) are imported by the
encoders when they run, not here.
"""

from .defaults import register_defaults
from .registry import EncodeOptions, SerializationRegistry

default_serialization_registry = register_defaults(SerializationRegistry())

__all__ = [
    "EncodeOptions",
    "SerializationRegistry",
    "default_serialization_registry",
    "register_defaults",
]
