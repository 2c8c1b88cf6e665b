"""The HTTP server. Importing this package imports no web framework."""
