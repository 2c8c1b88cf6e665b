"""``python -m tiled ...``: the ``tiled`` command line."""

from .commandline.main import main

main()
