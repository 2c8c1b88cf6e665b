# The HTTP "about" document and the client's User-Agent report this, and upstream's servers and
# clients gate behaviour on it (a server answers a client before 0.2.19 in an older dialect), so
# it follows upstream's numbering: the release whose HTTP API this package speaks.
__version__ = "0.2.20"
__version_tuple__ = (0, 2, 20)
