"""What a queue is entitled to: its weight, its guarantee and its limit.

A guarantee or a limit maps keys to amounts. A key is a device model (``H100``; matched
without regard to case), a device kind (``gpu``, ``npu``, ``fpga``: whole devices of any
model of that kind) or ``cost`` (money per hour, in the unit of ``prices``). Kind and cost
keys are stored lower-case; model keys as written. Amounts are devices (shares add up: two
half slices count as one) or money per hour, never negative. A limit below the guarantee
for the same key is refused, naming the key.

One model for the config file (``queues.NAME``) and the API's door, so both check alike.
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DEVICE_KINDS = ("gpu", "npu", "fpga")
COST_KEY = "cost"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")

V = TypeVar("V")
Amount = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


def normal_key(key: str) -> str:
    """``key`` as stored: kinds and ``cost`` lower-case, model names as written."""
    return key.lower() if key.lower() in (*DEVICE_KINDS, COST_KEY) else key


class KeyProblem(ValueError):
    """A guarantee or limit key that cannot be used; ``path`` is ``guarantee.KEY`` or ``limit.KEY``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def checked_keys(amounts: dict[str, V], what: str) -> dict[str, V]:
    """``amounts`` with its keys checked (:class:`KeyProblem` naming ``what.KEY``) and stored as :func:`normal_key` says."""
    out: dict[str, V] = {}
    seen: dict[str, str] = {}
    for key, amount in amounts.items():
        if not KEY_PATTERN.match(key):
            raise KeyProblem(f"{what}.{key}", f"not a device model, a kind ({', '.join(DEVICE_KINDS)}) or {COST_KEY!r}")
        if key.lower() in seen:
            raise KeyProblem(f"{what}.{key}", f"given twice ({seen[key.lower()]!r} and {key!r}; keys are matched without regard to case)")
        seen[key.lower()] = key
        out[normal_key(key)] = amount
    return out


class EntitlementFields(BaseModel):
    """A queue's share of the pool, each amount checked; its keys are checked by :class:`Entitlement`
    (the config file) or by the API's service, which names the key at fault in its answer."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False, description="its share of what no guarantee holds, against the other queues' weights")
    guarantee: dict[str, Amount] = Field(
        default_factory=dict, description="devices by model or kind, or `cost` per hour, it gets back by preemption when it asks"
    )
    limit: dict[str, Amount] = Field(default_factory=dict, description="devices by model or kind, or `cost` per hour, it never holds more than")


class Entitlement(EntitlementFields):
    """A queue's share of the pool (see the module's docstring), keys and amounts checked."""

    @field_validator("guarantee")
    @classmethod
    def _guarantee_keys(cls, guarantee: dict[str, float]) -> dict[str, float]:
        return checked_keys(guarantee, "guarantee")

    @field_validator("limit")
    @classmethod
    def _limit_keys(cls, limit: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        limit = checked_keys(limit, "limit")
        check_limit_covers_guarantee(info.data.get("guarantee") or {}, limit)
        return limit


def check_limit_covers_guarantee(guarantee: dict[str, float], limit: dict[str, float]) -> None:
    """Raise ValueError naming the first key whose limit is below its guarantee."""
    if (below := limit_below_guarantee(guarantee, limit)) is not None:
        key, cap, floor = below
        raise ValueError(f"limit.{key} = {cap:g} is below guarantee.{key} = {floor:g}")


def limit_below_guarantee(guarantee: dict[str, float], limit: dict[str, float]) -> tuple[str, float, float] | None:
    """The first key (as the limit spells it) whose limit is below its guarantee, with both amounts; or None."""
    lowered = {key.lower(): amount for key, amount in guarantee.items()}
    for key, cap in limit.items():
        floor = lowered.get(key.lower())
        if floor is not None and cap < floor:
            return key, cap, floor
    return None


def unknown_keys(amounts: dict[str, float], models: set[str]) -> list[str]:
    """Keys of ``amounts`` that are neither a kind, ``cost``, nor one of ``models`` (any case)."""
    known = {model.lower() for model in models} | set(DEVICE_KINDS) | {COST_KEY}
    return [key for key in amounts if key.lower() not in known]
