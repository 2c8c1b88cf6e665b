"""Encoding nodes into media types for ``/api/v1`` data routes, content negotiation, and
decoding the bodies of writes.

``default_serialization_registry`` holds the built-in encoders; build another
:class:`SerializationRegistry` (optionally with :func:`register_defaults`) to add or replace
encoders. ``default_deserialization_registry`` holds the built-in decoders of request bodies
(:class:`DeserializationRegistry`, :func:`register_default_decoders`). Heavy libraries (h5py,
Pillow, tifffile, pyarrow, xarray, zarr) are imported by the encoders when they run, not here.
"""

from .decoding import DeserializationRegistry, register_default_decoders
from .defaults import register_defaults
from .registry import EncodeOptions, SerializationRegistry

default_serialization_registry = register_defaults(SerializationRegistry())
default_deserialization_registry = register_default_decoders(DeserializationRegistry())

__all__ = [
    "DeserializationRegistry",
    "EncodeOptions",
    "SerializationRegistry",
    "default_deserialization_registry",
    "default_serialization_registry",
    "register_default_decoders",
    "register_defaults",
]
