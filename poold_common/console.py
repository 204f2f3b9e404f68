"""The terminal both command lines (``poold`` and ``poold-agent``) print tables to.

Everything printed here is literal: names, reasons, paths and bus ids come from users and
agents, and rich would read ``[/]`` as markup (and fail) and ``:ab:`` in ``0000:ab:00.0`` as
an emoji. Emphasis is asked for explicitly, with a style (``style="bold"``, a
``rich.text.Text`` span, a table's ``header_style``), never written into the text.
"""

from __future__ import annotations

import sys

from rich.console import Console

# Piped output gets a width that fits the tables instead of rich's 80-column fallback.
console = Console(markup=False, emoji=False, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
