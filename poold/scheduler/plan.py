"""Dry runs and jobs that can never run.

- :class:`Capacity` mirrors the pool as if every node were up and every device healthy and
  idle. A request that fails there can never be placed as the pool stands (a model nobody
  has, a MIG profile no GPU offers, more devices than any node has, a price cap below the
  cheapest chip); ``poold submit`` refuses it with the reason (``scheduler.never_fits``).
- :func:`plan` is ``poold plan``: where a job would go now, its cost per unit of work, the
  runner-up, and how many candidates each filter turned down, without submitting anything.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from poold.scheduler.engine import TOO_FEW, Engine, Placement, Unplaceable
from poold.scheduler.framework import EngineOptions, Rejections
from poold.scheduler.loop import Scheduler
from poold.scheduler.request import PlacementRequest
from poold.scheduler.snapshot import StoreSnapshot
from poold.scheduler.stack import Stack, build_stack
from poold.settings import Settings

class Capacity:
    """The pool at its best (see the module docstring), refreshed from the store at most every
    ``refresh_s`` seconds; safe to call from API threads."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, stack: Stack | None = None, refresh_s: float = 1.0):
        self.factory, self.refresh_s = factory, refresh_s
        self.snapshot = StoreSnapshot(settings, capacity_only=True)
        self.engine = Engine(self.snapshot.pool, stack or build_stack(), EngineOptions(count_outside_memory=False, seed=0))
        self.lock = threading.Lock()
        self._refreshed = float("-inf")
        # Verdicts by request signature, until the pool at its best changes.
        self._verdicts: dict[tuple, Unplaceable | None] = {}

    def refresh(self) -> None:
        """Bring the view up to date with the store now. The daemon calls this every
        ``refresh_s`` from its periodic jobs, so that submits rarely wait for a reload."""
        with self.lock:
            self._refresh()

    def _refresh(self) -> None:
        with self.factory() as session:
            if self.snapshot.refresh(session):
                self._verdicts.clear()
        self._refreshed = time.monotonic()

    def never_fits(self, request: PlacementRequest) -> Unplaceable | None:
        """Why ``request`` could not be placed even on an idle pool; None when it could, or
        when the pool has no nodes yet (nothing to judge by). A refusal is judged again on a
        view read from the store just now (a node may have joined since the last refresh)."""
        with self.lock:
            if time.monotonic() - self._refreshed > self.refresh_s or not len(self.snapshot.pool.alive_nodes()):
                self._refresh()  # stale, or nothing to judge by yet (nodes may have registered since)
            verdict = self._judge(request)
            if verdict is not None:
                self._refresh()
                verdict = self._judge(request)
        return verdict

    def _judge(self, request: PlacementRequest) -> Unplaceable | None:
        if request.signature in self._verdicts:
            return self._verdicts[request.signature]
        if not len(self.snapshot.pool.alive_nodes()):
            return None
        decision = self.engine.place(request)
        verdict = self._verdicts[request.signature] = decision if isinstance(decision, Unplaceable) else None
        return verdict


@dataclass
class Plan:
    request: PlacementRequest
    placement: Placement | None
    rejections: Rejections
    never_fits: Unplaceable | None
    filter_of: dict[str, str]

    @property
    def reason(self) -> str:
        if self.placement is not None:
            return self.placement.reason
        if self.never_fits is not None:
            return "never fits, even on an idle pool: " + self.never_fits.rejections.summary()
        return "no placement fits now: " + self.rejections.summary()


def plan(scheduler: Scheduler, capacity: Capacity, request: PlacementRequest) -> Plan:
    """Decide ``request`` on the pool as it is now, without holding anything."""
    with scheduler.lock:
        with scheduler.factory() as session:
            scheduler.refresh(session)
        decision = scheduler.engine.place(request)
        rejections = scheduler.engine.rejections(request)
        filter_of = {code: getattr(plugin, "name", "candidates") for code, plugin in scheduler.engine.code_owner.items()}
    filter_of[TOO_FEW] = "candidates"
    placement = decision if isinstance(decision, Placement) else None
    return Plan(request, placement, rejections, capacity.never_fits(request), filter_of)
