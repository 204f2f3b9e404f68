"""The wire schema between poold's node agents and its daemon: one leaf package both import.

It imports neither ``agents`` nor ``poold`` (only pydantic), so either side can be upgraded
on its own and read the other's messages:

- :mod:`poold_wire.bounds`: the limits every reported value keeps (integers that fit their
  columns, strings without NUL, attribute trees of bounded depth and size);
- :mod:`poold_wire.records`: ``DeviceRecord`` and ``HostRecord``, what collectors produce;
- :mod:`poold_wire.messages`: the agent <-> daemon requests and responses, and
  ``PROTOCOL_VERSION``.
"""
