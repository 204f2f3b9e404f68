"""poold: a resource-pool daemon for heterogeneous accelerators."""

__version__ = "0.1.0"
