"""Heartbeats out of the transaction path: what changes every few seconds stays in memory.

An agent heartbeats every few seconds with its whole inventory, but almost every heartbeat
says the same thing about what placement and the store care for (devices, health, memory
used outside poold in 256 MiB steps, attributes, the jobs it runs); only usage moves (power,
temperature, utilisation, free memory, load). :class:`NodeReports` keeps, per node, a
fingerprint of the last report written to the store:

- a heartbeat with the same fingerprint is answered from memory: its usage is kept here for
  the API and metrics, and the node is marked seen. Seen marks are written to the store once
  a second for all such nodes (:meth:`flush`), which is what the lost-node check reads;
- anything else (a new fingerprint, a node this daemon has not written yet) takes the full
  path: one transaction that updates the rows that changed
  (``poold.services.nodes.heartbeat``) and stores the report's fingerprint on the node row
  (``report_fingerprint``), then the fingerprint is kept here too.

The stored fingerprint is how a daemon knows that the report it remembers is still the one
the store holds. With each flush it reads back, for the nodes it answered, their state, drain
flag and stored fingerprint, and forgets a node whose stored fingerprint is another (a
replica wrote a newer report), is cleared (the store changed in a way only a written report
settles: a job started that the stored report does not list; a job the agent stopped listing
is waiting out its grace) or that is no longer ``ready`` (marked lost meanwhile, perhaps by
another replica). A forgotten node's next heartbeat takes the full path. So a node whose
report does not change is never written in full again, however long it runs, and nothing a
replica remembers outlives a flush interval once the store says otherwise.

Each daemon keeps its own usage figures; usage shown by a replica is what reached that replica.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from poold.db.ids import among
from poold.db.models import NodeModel, utcnow
from poold.services.nodes import DEVICE_USAGE, HOST_USAGE, OUTSIDE_MEMORY_STEP_MIB
from poold_wire.bounds import INT64_MAX

@dataclass
class Usage:
    """The latest usage figures of one node, as its last heartbeat to this daemon gave them."""

    at: datetime
    host: dict[str, Any]
    devices: dict[str, dict[str, Any]]  # uuid -> figures


@dataclass
class _Node:
    fingerprint: str
    drained: bool
    usage: Usage | None = None


@dataclass
class NodeReports:
    _nodes: dict[str, _Node] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)  # nodes answered from memory since the last flush
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_from_memory(self, name: str, body: Any) -> bool | None:
        """The drain flag to answer a heartbeat with, when its JSON body repeats the last
        written report but for usage figures that are well formed (kept as seen, usage
        recorded); None when it must be validated and written."""
        fingerprint = fingerprint_of(body)
        usage = usage_of(body) if fingerprint is not None else None
        if usage is None:
            return None
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.fingerprint != fingerprint:
                return None
            node.usage = usage
            self._seen.add(name)
            return node.drained

    def written(self, name: str, body: Any, fingerprint: str | None, drained: bool) -> None:
        """The report (a heartbeat's JSON body, validated) was written to the store, with its
        ``fingerprint`` (``fingerprint_of(body)``) on the node row."""
        usage = usage_of(body)
        with self._lock:
            self._seen.discard(name)
            if fingerprint is None:
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = _Node(fingerprint, drained, usage)

    def forget(self, name: str) -> None:
        with self._lock:
            self._nodes.pop(name, None)
            self._seen.discard(name)

    def usage(self, name: str) -> Usage | None:
        with self._lock:
            node = self._nodes.get(name)
            return node.usage if node is not None else None

    def flush(self, session: Session) -> int:
        """Mark the nodes answered from memory since the last flush as seen now (one statement
        per thousand nodes: the mark is at most a flush interval late), and read back their
        drain flag, state and stored fingerprint (see the module docstring); returns how many
        were marked."""
        with self._lock:
            seen, self._seen = self._seen, set()
        if not seen:
            return 0
        names, now, current = sorted(seen), utcnow(), {}
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            session.execute(
                update(NodeModel).where(among(NodeModel.name, chunk), NodeModel.state == "ready").values(last_heartbeat_at=now)
            )
            query = select(NodeModel.name, NodeModel.state, NodeModel.drained, NodeModel.report_fingerprint).where(among(NodeModel.name, chunk))
            current.update({name: rest for name, *rest in session.execute(query)})
        with self._lock:
            for name in names:
                node = self._nodes.get(name)
                if node is None:
                    continue
                state, drained, stored = current.get(name, (None, False, None))
                if state != "ready" or stored != node.fingerprint:
                    del self._nodes[name]  # the next heartbeat is written in full
                else:
                    node.drained = drained
        return len(seen)


def fingerprint_of(body: Any) -> str | None:
    """A digest of everything in a heartbeat's JSON body that the store keeps: the records
    less usage, memory used outside poold in 256 MiB steps, the jobs the agent runs, its
    machine id. None when the body is not shaped as a heartbeat (validation will say why)."""
    if not isinstance(body, dict) or not isinstance(body.get("host"), dict) or not isinstance(body.get("devices", []), list):
        return None
    # A field left out and a field sent as null read alike: both are dropped.
    host = {key: value for key, value in body["host"].items() if key not in HOST_USAGE and value is not None}
    devices = []
    for device in body.get("devices", []):
        if not isinstance(device, dict):
            return None
        facts = {key: value for key, value in device.items() if key not in DEVICE_USAGE and key != "memory_outside_mib" and value is not None}
        outside = device.get("memory_outside_mib")
        facts["outside_step"] = outside // OUTSIDE_MEMORY_STEP_MIB if _is_count(outside) else outside
        devices.append(facts)
    rest = {key: value for key, value in body.items() if key not in ("host", "devices") and value is not None}
    if isinstance(rest.get("running_jobs"), list):
        rest["running_jobs"] = sorted(rest["running_jobs"], key=str)
    try:
        text = orjson.dumps([host, devices, rest], option=orjson.OPT_SORT_KEYS)  # a tenth of json.dumps' time here
    except TypeError:  # a value JSON cannot hold (an integer past 64 bits): validation will say which
        return None
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def usage_of(body: dict[str, Any]) -> Usage | None:
    """The usage figures of a heartbeat's JSON body, or None when one is not what the wire
    allows (a finite number; a count for memory), so that validation sees the body."""
    host = {key: body["host"].get(key) for key in HOST_USAGE}
    if not (_is_count(host["memory_available_mib"]) or host["memory_available_mib"] is None):
        return None
    if not (host["load_1m"] is None or (_is_number(host["load_1m"]) and host["load_1m"] >= 0)):
        return None
    devices = {}
    for device in body.get("devices", []):
        figures = {key: device.get(key) for key in DEVICE_USAGE}
        for key, value in figures.items():
            ok = value is None or (_is_count(value) if key == "memory_free_mib" else _is_number(value))
            if not ok:
                return None
        devices[str(device.get("uuid"))] = figures
    return Usage(at=utcnow(), host=host, devices=devices)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= INT64_MAX
