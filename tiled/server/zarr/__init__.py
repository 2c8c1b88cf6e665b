"""The zarr view of the tree: one neutral mapping, two small format encodings."""
