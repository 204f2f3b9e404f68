"""The terminal both command lines (``poold`` and ``poold-agent``) print tables to."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped output gets a width that fits the tables instead of rich's 80-column fallback.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
