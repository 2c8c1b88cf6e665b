"""The zarr view of a node, independent of HTTP: one neutral model and its two encodings.

- :mod:`.model`: what a node looks like as a zarr array or group (``ZarrArrayMeta``,
  ``ZarrGroupMeta``), the server's choices (``ZarrOptions``) and the chunk-grid rule.
- :mod:`.codecs`: the numcodecs work (the configurable codecs, chunk compression, strings).
- :mod:`.encoding`: what an encoding offers (``ZarrEncoding``) and the JSON pieces both share.
- :mod:`.v2`, :mod:`.v3`: the two encodings; :mod:`.formats`: the lookup of one by format.
- :mod:`.zarr_python`: the zarr-python names the project uses (public modules, one exception).

The server's ``/zarr`` routes and the zipped zarr download both build on this package, which
imports neither of them. Nothing is imported here: each importer loads only the modules it
uses (only the encodings load zarr-python).
"""
