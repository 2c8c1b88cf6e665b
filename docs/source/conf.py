"""Sphinx configuration (MyST markdown)."""

project = "Tiled (zarr-first fork)"
author = "The Tiled fork developers"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["build"]
html_theme = "alabaster"
html_static_path = ["_static"]
