"""Heartbeats out of the transaction path: what changes every few seconds stays in memory.

An agent heartbeats every few seconds with its whole inventory, but almost every heartbeat
says the same thing about what placement and the store care for (devices, health, memory
used outside poold in 256 MiB steps, attributes, the jobs it runs); only usage moves (power,
temperature, utilisation, free memory, load). :class:`NodeReports` keeps, per node, a
fingerprint of the last report written to the store:

- a heartbeat with the same fingerprint is answered from memory: its usage is kept here for
  the API and metrics, and the node is marked seen. Seen marks are written to the store once
  a second for all such nodes (:meth:`flush`), which is what the lost-node check reads;
- anything else (a new fingerprint, a node this daemon has not written yet, a write older
  than ``REWRITE_AFTER_S``) takes the full path: one transaction that updates the rows that
  changed (``poold.services.nodes.heartbeat``), then the fingerprint is kept.

Each daemon keeps its own; usage shown by a replica is what reached that replica. The drain
flag a fast answer carries is read back from the store with each flush (at most a second
old), and a node the store no longer holds as ready (marked lost meanwhile, perhaps by
another replica) is forgotten, so its next heartbeat takes the full path and brings it back.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from poold_wire.records import DeviceRecord, HostRecord
from poold.db.models import NodeModel, utcnow
from poold.services.nodes import DEVICE_USAGE, HOST_USAGE, OUTSIDE_MEMORY_STEP_MIB

# A node's report is written to the store at least this often, even when nothing changed.
REWRITE_AFTER_S = 300.0


@dataclass
class Usage:
    """The latest usage figures of one node, as its last heartbeat to this daemon gave them."""

    at: datetime
    host: dict[str, Any]
    devices: dict[str, dict[str, Any]]  # uuid -> figures


@dataclass
class _Node:
    fingerprint: str
    written: float  # time.monotonic() of the last full write
    drained: bool
    usage: Usage | None = None


@dataclass
class NodeReports:
    _nodes: dict[str, _Node] = field(default_factory=dict)
    _seen: dict[str, datetime] = field(default_factory=dict)  # answered from memory since the last flush
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_from_memory(self, name: str, host: HostRecord, devices: list[DeviceRecord], extra: tuple = ()) -> bool | None:
        """The drain flag to answer a heartbeat with, when it repeats the last written report
        (kept as seen, usage recorded); None when it must be written."""
        fingerprint = fingerprint_of(host, devices, extra)
        usage = _usage(host, devices)
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.fingerprint != fingerprint or time.monotonic() - node.written > REWRITE_AFTER_S:
                return None
            node.usage = usage
            self._seen[name] = usage.at
            return node.drained

    def written(self, name: str, host: HostRecord, devices: list[DeviceRecord], drained: bool, extra: tuple = ()) -> None:
        """The report was written to the store (register or full heartbeat)."""
        node = _Node(fingerprint_of(host, devices, extra), time.monotonic(), drained, _usage(host, devices))
        with self._lock:
            self._nodes[name] = node
            self._seen.pop(name, None)

    def forget(self, name: str) -> None:
        with self._lock:
            self._nodes.pop(name, None)
            self._seen.pop(name, None)

    def usage(self, name: str) -> Usage | None:
        with self._lock:
            node = self._nodes.get(name)
            return node.usage if node is not None else None

    def flush(self, session: Session) -> int:
        """Mark the nodes answered from memory since the last flush as seen now (one statement
        per thousand nodes: the mark is at most a flush interval late), and read back their
        drain flag and state; returns how many were marked."""
        with self._lock:
            seen, self._seen = self._seen, {}
        if not seen:
            return 0
        names, now, current = sorted(seen), utcnow(), {}
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            session.execute(
                update(NodeModel).where(NodeModel.name.in_(chunk), NodeModel.state == "ready").values(last_heartbeat_at=now)
            )
            query = select(NodeModel.name, NodeModel.state, NodeModel.drained).where(NodeModel.name.in_(chunk))
            current.update({name: (state, drained) for name, state, drained in session.execute(query)})
        with self._lock:
            for name in names:
                node = self._nodes.get(name)
                if node is None:
                    continue
                state, drained = current.get(name, (None, False))
                if state != "ready":
                    del self._nodes[name]  # lost (or gone) meanwhile: the next heartbeat is written in full
                else:
                    node.drained = drained
        return len(seen)


def fingerprint_of(host: HostRecord, devices: list[DeviceRecord], extra: tuple = ()) -> str:
    """A digest of everything in a report that the store keeps: the records less usage, memory
    used outside poold in 256 MiB steps, plus ``extra`` (e.g. the jobs the agent runs)."""
    host_facts = host.model_dump(mode="json", exclude=set(HOST_USAGE))
    device_facts = []
    for device in devices:
        facts = device.model_dump(mode="json", exclude=set(DEVICE_USAGE) | {"memory_outside_mib"})
        facts["outside_step"] = (device.memory_outside_mib or 0) // OUTSIDE_MEMORY_STEP_MIB
        device_facts.append(facts)
    text = json.dumps([host_facts, device_facts, list(extra)], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _usage(host: HostRecord, devices: list[DeviceRecord]) -> Usage:
    return Usage(
        at=utcnow(),
        host={key: getattr(host, key) for key in HOST_USAGE},
        devices={device.uuid: {key: getattr(device, key) for key in DEVICE_USAGE} for device in devices},
    )
