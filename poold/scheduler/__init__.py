"""Placement: an in-memory view of the pool, a filter → score → pick pipeline, and the pass
that turns its choices into allocations. ``stack.build_stack`` is the one place that
assembles the policy.
"""
