"""poold: a resource-pool daemon for heterogeneous accelerators."""

from poold_common import __version__

__all__ = ["__version__"]
