"""Upstream's import path for the image helper custom exporters use (``img_as_ubyte``)."""

from .array import scale_to_uint8 as img_as_ubyte

__all__ = ["img_as_ubyte"]
