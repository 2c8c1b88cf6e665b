# The HTTP "about" document reports this to clients, and upstream's Python client gates
# behaviour on it, so it follows upstream's numbering (this fork tracks the 0.2 API).
__version__ = "0.2.16"
__version_tuple__ = (0, 2, 16)
