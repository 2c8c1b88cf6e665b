"""Client-side tools for Tiled servers.

For now: :mod:`tiled.client.register`, which registers directories of files with a server's
catalog (``tiled register``). Importing this package loads nothing heavy.
"""
