"""The metric names a PromQL expression reads, for the tests that hold the Grafana dashboard
and the Prometheus rules to what the daemon and agents export.

Not a PromQL parser (``promtool check rules`` checks the syntax, see tests/test_grafana.py):
string literals, label matchers, ranges and grouping clauses are taken out, and what is left
that names neither a function (followed by a parenthesis) nor a keyword is a metric.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

# Grafana's variables, as a query is sent: intervals become a range, others a regex.
GRAFANA_INTERVALS = re.compile(r"\$__(?:rate_interval|interval|range)\b")
GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def substitute(expr: str) -> str:
    """``expr`` as Grafana sends it (its variables filled in with something valid)."""
    return GRAFANA_VARIABLE.sub(".*", GRAFANA_INTERVALS.sub("5m", expr))


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', substitute(expr))
    text = _RANGE.sub("", _MATCHERS.sub("", text))
    text = _CLAUSE.sub("", text)
    return {name for name, call in _IDENTIFIER.findall(text) if not call and name not in KEYWORDS}


REQUIRE_PROMTOOL = os.environ.get("POOLD_TEST_REQUIRE_PROMTOOL") == "1"


def promtool() -> str:
    """Where promtool is; the test skips, saying so, without it, or fails where
    ``POOLD_TEST_REQUIRE_PROMTOOL=1`` (what .ci/run sets)."""
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (Debian's prometheus package: apt-get install prometheus)"
        if REQUIRE_PROMTOOL:
            pytest.fail(message + "; POOLD_TEST_REQUIRE_PROMTOOL=1 makes the promtool checks mandatory")
        pytest.skip(message)
    return found
