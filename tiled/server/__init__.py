"""The HTTP server. Importing this package imports no web framework."""


def __getattr__(name: str):
    # ``from tiled.server import SimpleTiledServer`` (upstream's name), imported on use.
    if name == "SimpleTiledServer":
        from .simple import SimpleTiledServer

        return SimpleTiledServer
    raise AttributeError(f"module 'tiled.server' has no attribute {name!r}")
