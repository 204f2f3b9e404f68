"""What poold's daemon and its node agents share besides the wire schema (``poold_wire``):
the release version, settings loading from TOML and environment variables, and sd_notify.

A leaf like ``poold_wire``: it imports neither ``poold`` nor ``agents``, so neither of those
imports the other.
"""

__version__ = "0.1.0"
