"""poold node agents: device discovery, health, and running the jobs placed on a node."""

from poold_common import __version__

__all__ = ["__version__"]
