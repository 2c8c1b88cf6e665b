"""JPEG and PNG images, and sequences of them stacked as one node, as array nodes.

Images are decoded whole by Pillow (shape ``(height, width)`` or ``(height, width, bands)``).
Neither format's compression is a zarr codec (JPEG is lossy; PNG filters each row before
deflating), so the zarr view always decodes and re-encodes, as the node's metadata says.
Decoded images are shared for a while (:data:`tiled.adapters.sequence.DECODED`), so the
chunks of one image do not decode it each.
"""

from __future__ import annotations

from typing import ClassVar

import numpy
from PIL import Image

from .sequence import (
    FileSequenceAdapter,
    FrameLayout,
    FrameReader,
    OpenedFile,
    SingleFileAdapter,
    decoded_array,
    whole_chunks,
)


class _ImageReader(FrameReader):
    format_name: ClassVar[str] = "JPEG"

    def parse(self, file: OpenedFile) -> FrameLayout:
        image = self._decode(file)  # Pillow knows the type only by decoding; keep the result
        reason = f"{self.format_name} compression has no zarr codec"
        return FrameLayout(image.shape, image.dtype, whole_chunks(image.shape), reason)

    def _decode(self, file: OpenedFile) -> numpy.ndarray:
        def decode() -> numpy.ndarray:
            file.file.seek(0)
            with Image.open(file.file) as image:
                return numpy.asarray(image)

        return decoded_array(file, decode)

    def read_region(
        self, file: OpenedFile, layout: FrameLayout, region: tuple[slice, ...]
    ) -> numpy.ndarray:
        return self._decode(file)[region]


class _PNGReader(_ImageReader):
    format_name = "PNG"

    def parse(self, file: OpenedFile) -> FrameLayout:
        layout = super().parse(file)
        reason = "PNG filters rows before deflating them, which no zarr codec undoes"
        return FrameLayout(layout.shape, layout.dtype, layout.chunks, reason)


class JPEGAdapter(SingleFileAdapter):
    """Read a JPEG image: ``JPEGAdapter("file://localhost/a.jpg")``."""

    reader_type = _ImageReader


class JPEGSequenceAdapter(FileSequenceAdapter):
    """Read a sequence of JPEG images of one size, stacked along a new first dimension."""

    reader_type = _ImageReader


class PNGAdapter(SingleFileAdapter):
    """Read a PNG image: ``PNGAdapter("file://localhost/a.png")``."""

    reader_type = _PNGReader


class PNGSequenceAdapter(FileSequenceAdapter):
    """Read a sequence of PNG images of one size, stacked along a new first dimension."""

    reader_type = _PNGReader


__all__ = ["JPEGAdapter", "JPEGSequenceAdapter", "PNGAdapter", "PNGSequenceAdapter"]
