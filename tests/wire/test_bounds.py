"""The bounds of poold_wire: the edge of each limit is accepted, one past it refused, and the
refusal names the path inside the attribute tree."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from poold_wire.bounds import INT64_MAX, MAX_DEPTH, MAX_ITEMS, MAX_KEYS, MAX_STRING_CHARS, MAX_TREE_BYTES
from poold_wire.messages import MESSAGE_MAX, JobEvent, event_message
from poold_wire.records import DeviceRecord


def device(**attributes) -> DeviceRecord:
    return DeviceRecord(uuid="GPU-1", vendor="nvidia", kind="gpu", model="H100", attributes=attributes)


def nested(depth: int) -> dict:
    """A value that makes the attribute map ``depth`` levels deep (the map itself is level 1)."""
    tree: dict = {"leaf": 1}
    for _ in range(depth - 2):
        tree = {"x": tree}
    return tree


def refusal(**attributes) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as info:
        device(**attributes)
    [error] = info.value.errors()
    return error["loc"], error["msg"]


def test_limits_are_inclusive():
    device(deep=nested(MAX_DEPTH), keys={f"k{i}": i for i in range(MAX_KEYS - 1)}, note="x" * MAX_STRING_CHARS,
           big=INT64_MAX, small=-INT64_MAX - 1, items=list(range(MAX_ITEMS)))


@pytest.mark.parametrize(
    ("attributes", "loc", "words"),
    [
        ({"deep": nested(MAX_DEPTH + 1)}, ("attributes", "deep", "x", "x", "x"), "nested deeper than 4"),
        ({"keys": {f"k{i}": i for i in range(MAX_KEYS + 1)}}, ("attributes", "keys"), "at most 64"),
        ({"items": list(range(MAX_ITEMS + 1))}, ("attributes", "items"), "at most 1024"),
        ({"note": "x" * (MAX_STRING_CHARS + 1)}, ("attributes", "note"), "at most 1024"),
        ({"big": INT64_MAX + 1}, ("attributes", "big"), "64-bit"),
        ({"ecc": {"note": "a\x00b"}}, ("attributes", "ecc", "note"), "NUL"),
        ({"ratio": float("nan")}, ("attributes", "ratio"), "finite"),
        ({"blob": [["y" * 1000] * 40] * 2}, ("attributes",), f"at most {MAX_TREE_BYTES}"),
    ],
)
def test_tree_past_a_limit_is_refused_at_its_path(attributes, loc, words):
    where, message = refusal(**attributes)
    assert where == loc and words in message


def test_event_message_keeps_nul_visible_and_fits_the_field():
    assert event_message("chdir /w\x00d") == "chdir /w\\0d"
    long = event_message("x" * (MESSAGE_MAX + 10))
    assert len(long) == MESSAGE_MAX and long.endswith("…")
    JobEvent(job_id=1, kind="ended", at="2026-01-01T00:00:00Z", message=long)
