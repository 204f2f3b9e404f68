"""What every value one component reports to another must keep, checked at the daemon's door.

PostgreSQL refuses a NUL byte in text and an integer beyond its column (INTEGER is 32-bit,
BIGINT 64-bit); SQLite refuses integers beyond 64 bits; JSON has no NaN or infinity. A value
that breaks one of these is refused where it enters, with a 422 naming its field, instead of
failing deep inside a transaction (a 500 that the sender retries forever).

Free-form attribute maps (``DeviceRecord.attributes``, ``HostRecord.attributes``) are JSON
trees bounded by :func:`check_tree`: nesting depth, keys per mapping, items per list, string
length, integer range and total size.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# Attribute trees: the map itself is depth 1, so {"ecc": {"enabled": true}} is depth 2 and
# {"processes": [{"pid": 1}]} depth 3.
MAX_DEPTH = 4
MAX_KEYS = 64  # per mapping
MAX_ITEMS = 1024  # per list (a GPU's processes)
MAX_KEY_CHARS = 200  # a key may be a device uuid (nvlink, pcie)
MAX_STRING_CHARS = 1024
MAX_TREE_BYTES = 64 * 1024  # the whole tree as compact JSON


class WireModel(BaseModel):
    """Base of every record and message: a tolerant reader (fields a newer sender adds are
    ignored, so agents and daemon upgrade one at a time), and no NaN or infinity, which JSON
    has not."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""A string without NUL bytes (PostgreSQL text cannot hold one)."""

Int32 = Annotated[int, Strict(), Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Int64 = Annotated[int, Strict(), Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Count32 = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX)]
"""A count or index that an INTEGER column holds: 0 <= n < 2**31."""
Count64 = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
"""A count or size (MiB) that a BIGINT column holds: 0 <= n < 2**63."""
JobId = Annotated[int, Strict(), Field(ge=1, le=INT64_MAX)]


class _TreeError(Exception):
    def __init__(self, path: tuple[str | int, ...], code: str, message: str):
        super().__init__(message)
        self.path, self.code, self.message = path, code, message


def check_tree(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse a JSON tree past the bounds above, naming the path of the first offending value.

    Used as an ``AfterValidator``: the ``ValidationError`` it raises is reported under the
    field's own location, so a 422 names e.g. ``devices.0.attributes.ecc.note``.
    """
    try:
        _walk(value, (), 1)
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_TREE_BYTES:
            raise _TreeError((), "tree_too_large", f"{size} bytes as JSON; at most {MAX_TREE_BYTES}")
    except _TreeError as problem:
        error = PydanticCustomError(problem.code, problem.message)  # type: ignore[arg-type]
        raise ValidationError.from_exception_data(
            "attributes", [InitErrorDetails(type=error, loc=problem.path, input=value)]
        ) from None
    return value


def _walk(value: Any, path: tuple[str | int, ...], depth: int) -> None:
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise _TreeError(path, "too_deep", f"nested deeper than {MAX_DEPTH} levels")
        if len(value) > MAX_KEYS:
            raise _TreeError(path, "too_many_keys", f"{len(value)} keys; at most {MAX_KEYS}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _TreeError(path, "key_type", f"key {key!r} is not a string")
            if len(key) > MAX_KEY_CHARS or "\x00" in key:
                raise _TreeError(path, "bad_key", f"key {key[:40]!r}…: longer than {MAX_KEY_CHARS} characters or holds a NUL byte")
            _walk(item, (*path, key), depth + 1)
    elif isinstance(value, list):
        if depth > MAX_DEPTH:
            raise _TreeError(path, "too_deep", f"nested deeper than {MAX_DEPTH} levels")
        if len(value) > MAX_ITEMS:
            raise _TreeError(path, "too_many_items", f"{len(value)} items; at most {MAX_ITEMS}")
        for index, item in enumerate(value):
            _walk(item, (*path, index), depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise _TreeError(path, "nul_byte", "must not contain a NUL byte")
        if len(value) > MAX_STRING_CHARS:
            raise _TreeError(path, "string_too_long", f"{len(value)} characters; at most {MAX_STRING_CHARS}")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise _TreeError(path, "int_range", "integer out of the signed 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _TreeError(path, "not_finite", "must be a finite number")
    else:
        raise _TreeError(path, "not_json", f"a {type(value).__name__} is not a JSON value")


Tree = Annotated[dict[str, Any], AfterValidator(check_tree)]
"""A free-form attribute map within the bounds above."""
