"""Filters, one per module, cheapest first in ``poold.scheduler.stack``."""
