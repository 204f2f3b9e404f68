"""What kind of reason a waiting job has: its reason with what changes whenever a device frees
up taken out, so that a job's event log says something new only when the kind changes (the
pass's ``job.waiting`` events, and ``poold submit --wait``). A leaf module: the CLI reads it
without loading the scheduler."""

from __future__ import annotations

import re


def reason_kind(reason: str) -> str:
    """A waiting reason as its kind: numbers taken out (counts, prices, times, ids), the
    examples of a list of rejections ("(e.g. 2 suitable L4 free on a, 4 asked)") dropped, and
    of that list only its first code, the nearest miss, kept: which other codes appear, and
    which node or device an example names, changes whenever a device frees up or is taken.
    "no placement fits: too_few_devices x2 (e.g. ...); device_busy x4 (e.g. ...); no reservation: ..."
    is "no placement fits: too_few_devices x#; no reservation: ..."."""
    clauses = _without_examples(reason).split("; ")
    kept = [clause for i, clause in enumerate(clauses) if i == 0 or not _REJECTION.fullmatch(clause)]
    return _NUMBER.sub("#", "; ".join(kept))


def _without_examples(reason: str) -> str:
    """``reason`` with each " (e.g. ...)" cut out, parentheses inside an example included."""
    out, at = [], 0
    while (start := reason.find(" (e.g. ", at)) >= 0:
        out.append(reason[at:start])
        depth, end = 0, start + 1
        for end in range(start + 1, len(reason)):
            depth += {"(": 1, ")": -1}.get(reason[end], 0)
            if depth == 0:
                break
        at = end + 1
    out.append(reason[at:])
    return "".join(out)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_REJECTION = re.compile(r"[a-z][a-z0-9_]* x\d+|and \d+ more reasons")
