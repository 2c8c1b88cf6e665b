"""The /zarr/v2 and /zarr/v3 routes: resolving keys, access-filtered documents, byte ranges.

The model and its encodings are :mod:`tiled.zarr_format`, shared with the zipped download.
"""
