"""The node agent's loop: register, heartbeat, take assignments, run jobs, report them.

One thread does everything, one ``step`` per ``poll_interval_s``:

1. apply XID events from the health watcher (the device turns unhealthy, heartbeat at once);
2. ``Runner.poll``: reap ended jobs, enforce max runtimes and kills (even with the daemon away);
3. unless backing off: register if needed, heartbeat when due (a fresh inventory each time),
   poll assignments when due, ship new log bytes, send queued events in order.

When the daemon is unreachable (connection errors, timeouts, 5xx) the agent keeps its jobs
running, keeps queuing events on disk, and retries with exponential backoff and jitter
(capped at ``retry_max_s``). Every call carries the node's credential (``agents.credential``),
taken by the daemon at the node's join, the first registration, which carries the join token
instead; a 401 (no credential taken yet and no join token, or one revoked) is logged and
retried with the same backoff, every report kept. A 404 for the node means the daemon forgot
it: the agent registers again. A 409 for a registration, a heartbeat or a poll means the node's name
belongs to another machine (see ``agents.identity``): the agent keeps registering, with
backoff, and polls for no work meanwhile. A report the daemon refuses for good (a 4xx for
one event or log chunk, or an event answered ``accepted: false``) is written to
``state_dir/refused.jsonl`` and dropped, and the next one goes: no report can hold up the
ones behind it. SIGTERM ends the loop and leaves the jobs running: the next agent adopts
them from ``state_dir``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import psutil

from agents import __version__, credential, identity
from agents.client import (
    Backoff, DaemonClient, DaemonRejected, DaemonUnavailable, LogOffsetMismatch, NotAuthenticated, UnknownNode,
)
from agents.config import AgentSettings
from agents.inventory import Inventory
from agents.isolation import Isolations
from agents.metrics import MetricsServer, NodeView, serve_metrics
from agents.runner import Runner
from agents.scrub import Scrubber
from agents.state import RefusalJournal
from agents.users import UserPolicy
from poold_common.https import is_loopback
from poold_common.sdnotify import notify as sd_notify
from poold_wire.messages import PROTOCOL_VERSION, HeartbeatRequest, JobEvent, JobEventResult, RegisterRequest, RegisterResponse
from poold_wire.records import HostRecord

log = logging.getLogger(__name__)

EVENTS_PER_REQUEST = 100
PRUNE_INTERVAL_S = 60.0
LOG_CHUNKS_PER_STEP = 8  # per job, so that one chatty job cannot hold up the loop


class HealthWatcher(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


XidCallback = Callable[[str, int, str], None]
WatcherFactory = Callable[[XidCallback], HealthWatcher | None]


class Agent:
    """One node's agent. ``inventory_source`` and ``watcher_factory`` come from
    ``agents.inventory`` in production (see ``build_agent``); tests pass their own."""

    def __init__(
        self,
        settings: AgentSettings,
        inventory_source: Callable[[], Inventory],
        watcher_factory: WatcherFactory | None = None,
        client: DaemonClient | None = None,
        notify: Callable[[str], Any] = sd_notify,
        backoff: Backoff | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.node = settings.node_name
        self.inventory_source = inventory_source
        self.watcher_factory = watcher_factory
        self.client = client or DaemonClient(settings.server_url, settings.request_timeout_s, ca_file=settings.ca_file)
        self.notify = notify
        self.close = close  # releases the collectors (NVML) when the loop ends
        self.backoff = backoff or Backoff(base_s=min(1.0, settings.poll_interval_s), cap_s=settings.retry_max_s)
        self.runner = Runner(settings.state_dir, self.node, kill_grace_s=settings.kill_grace_s,
                             kill_untagged=settings.fake is None, users=UserPolicy.from_settings(settings),
                             isolation=Isolations.from_settings(settings),
                             scrubber=Scrubber(settings.scrub, settings.scrub_timeout_s))
        self.refusals = RefusalJournal(settings.state_dir)
        self.machine_id = identity.machine_id(settings.state_dir, settings.machine_id)
        self.credential = credential.load_or_make(settings.state_dir, self.node, self.machine_id)
        if self.credential.joined:
            self.client.use(self.credential.token)
        self.heartbeat_interval_s = settings.heartbeat_interval_s
        self.registered = False
        self.inventory: Inventory | None = None
        self.unhealthy: dict[str, str] = {}  # device uuid -> reason, from XID events
        self.xids: dict[str, int] = {}  # device uuid -> the last XID seen (for /metrics)
        self.metrics: MetricsServer | None = None  # serving /metrics while the loop runs (metrics_listen)
        self._xids: queue.SimpleQueue[tuple[str, int, str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._retry_at = 0.0  # monotonic; the daemon is not called before it
        self._next_heartbeat = 0.0
        self._next_poll = 0.0
        self._next_prune = 0.0
        self._heartbeat_now = False

    # ---- lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        """Run until ``stop()``. READY=1 goes out after the first registration attempt, whether
        or not the daemon answered: the agent is up and minding its jobs either way."""
        if self.settings.server_url.startswith("http://") and not is_loopback(urlsplit(self.settings.server_url).hostname or ""):
            log.warning("%s is plain HTTP: this node's credential crosses the network in clear (use https:// and ca_file)",
                        self.settings.server_url)
        watcher = self.watcher_factory(self.on_xid) if self.watcher_factory else None
        if watcher is not None:
            watcher.start()
        metrics = self.metrics = serve_metrics(self.settings.metrics_listen, self.metrics_view)
        try:
            self._step_logged()
            status = f"registered as {self.node}" if self.registered else "daemon unreachable, retrying"
            self.notify(f"READY=1\nSTATUS={status}")
            log.info("agent %s %s; running %d job(s)", self.node, status, len(self.runner.running_ids()))
            while not self._stop.is_set():
                self._wake.wait(self._sleep_s())
                self._wake.clear()
                if self._stop.is_set():
                    break
                self._step_logged()
                self.notify("WATCHDOG=1")
        finally:
            self.notify("STOPPING=1")
            if metrics is not None:
                metrics.stop()
            if watcher is not None:
                watcher.stop()
            if self.close is not None:
                self.close()
            self.runner.isolation.close()
            self.client.close()
            log.info("agent %s stopped; %d job(s) left running", self.node, len(self.runner.running_ids()))

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread). Jobs keep running."""
        self._stop.set()
        self._wake.set()

    def on_xid(self, uuid: str, xid: int, reason: str) -> None:
        """The health watcher's callback (any thread): a critical XID on device ``uuid``."""
        self._xids.put((uuid, xid, reason))
        self._wake.set()

    def _sleep_s(self) -> float:
        """Until the next call due (or the retry time), but at most poll_interval_s: jobs need reaping."""
        now = time.monotonic()
        due = self._retry_at if self._retry_at > now else min(self._next_poll, self._next_heartbeat)
        return max(0.0, min(self.settings.poll_interval_s, due - now))

    # ---- one step -----------------------------------------------------------------------

    def _step_logged(self) -> None:
        try:
            self.step()
        except Exception:  # a bug or a full disk must not orphan the jobs' reporting: log, go on
            log.exception("agent step failed")

    def step(self) -> None:
        while not self._xids.empty():
            uuid, xid, reason = self._xids.get()
            self.unhealthy[uuid], self.xids[uuid] = reason, xid
            self._heartbeat_now = True
            log.warning("device %s unhealthy (XID %d): %s", uuid, xid, reason.removeprefix(f"XID {xid}: "))
        self.runner.poll(self.fresh_inventory)
        now = time.monotonic()
        if now < self._retry_at:
            return  # the daemon is away: jobs run on, events wait in the outbox
        try:
            if not self.registered:
                self._register()
            if self._heartbeat_now or now >= self._next_heartbeat:
                self._heartbeat(now)
            if now >= self._next_poll:
                self._poll_assignments(now)
            self._ship_logs()
            self._flush_outbox()
        except DaemonUnavailable as exc:
            delay = self.backoff.next_delay()
            self._retry_at = time.monotonic() + delay
            log.warning("daemon unreachable (%s); retrying in %.1f s", exc, delay)
            return
        except NotAuthenticated as exc:
            delay = self.backoff.next_delay()
            self._retry_at = time.monotonic() + delay
            log.error("the daemon does not take this node's token: %s; retrying in %.1f s", exc, delay)
            return
        except UnknownNode:
            log.warning("the daemon does not know node %s; registering again", self.node)
            self.registered = False
            self._wake.set()
            return
        except DaemonRejected as exc:  # registration, a claimed name's heartbeat, or a poll refused: say so, retry later
            delay = self.backoff.next_delay()
            self._retry_at = time.monotonic() + delay
            log.error("the daemon refused a request: %s; retrying in %.1f s", exc, delay)
            return
        self.backoff.reset()
        self._retry_at = 0.0
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL_S
            self.runner.prune(self.settings.job_retention_s, keep={e.job_id for _, e in self.runner.outbox.pending()})

    def metrics_view(self) -> NodeView:
        """What ``/metrics`` shows (``agents.metrics``), read from another thread: the latest
        inventory as the daemon is told it (XID-struck devices unhealthy), never a fresh one."""
        inventory = self.inventory
        if inventory is not None and self.unhealthy:
            inventory = inventory.model_copy(update={"devices": self._devices()})
        return NodeView(inventory, dict(self.xids), self.runner.device_holders(), len(self.runner.running_ids()))

    def fresh_inventory(self) -> Inventory:
        """Collect now; on a collector crash keep the last inventory (or a bare host record)."""
        try:
            self.inventory = self.inventory_source()
        except Exception as exc:  # the agent must outlive a broken driver
            log.exception("inventory failed")
            if self.inventory is None:
                self.inventory = Inventory(host=_bare_host(), collectors={"inventory": f"error: {exc}"})
        return self.inventory

    def _host(self) -> HostRecord:
        """The host record to report: the inventory's, with this node's ``network`` label."""
        inventory = self.inventory or self.fresh_inventory()
        return inventory.host.model_copy(update={"network": self.settings.network})

    def _devices(self) -> list:
        inventory = self.inventory or self.fresh_inventory()
        return [device.model_copy(update={"health": "unhealthy", "health_reason": self.unhealthy[device.uuid]})
                if device.uuid in self.unhealthy else device for device in inventory.devices]

    def _register(self) -> None:
        self.fresh_inventory()
        request = RegisterRequest(node=self.node, host=self._host(), devices=self._devices(), agent_version=__version__,
                                  protocol_version=PROTOCOL_VERSION, machine_id=self.machine_id)
        if self.credential.joined:
            answer = self.client.register(request)
        else:
            answer = self._join(request)
        self.node = self.runner.node = answer.node
        self.heartbeat_interval_s = answer.heartbeat_interval_s or self.settings.heartbeat_interval_s
        self.registered = True
        self._next_heartbeat = time.monotonic() + self.heartbeat_interval_s
        log.info("registered as %s (%d devices)", self.node, len(request.devices))

    def _join(self, request: RegisterRequest) -> RegisterResponse:
        """The first registration: with the join token, sending the credential made for the node."""
        if not self.settings.join_token:
            raise NotAuthenticated(f"node {self.node} has not joined yet and no join_token is set: ask an admin for one "
                                   f"(poold token create --role join) and set join_token (or POOLD_AGENT_JOIN_TOKEN)")
        answer = self.client.register(request.model_copy(update={"credential": self.credential.token}), self.settings.join_token)
        self.credential.joined = True
        credential.save(self.settings.state_dir, self.credential)
        self.client.use(self.credential.token)
        log.info("node %s joined: its credential is in %s", self.node, self.settings.state_dir / credential.FILE)
        return answer

    def _heartbeat(self, now: float) -> None:
        self.fresh_inventory()
        request = HeartbeatRequest(host=self._host(), devices=self._devices(), running_jobs=self.runner.running_ids(),
                                   machine_id=self.machine_id)
        try:
            answer = self.client.heartbeat(self.node, request)
        except UnknownNode:
            raise
        except DaemonRejected as exc:
            self._check_name_held(exc)
            log.error("heartbeat refused: %s", exc.detail)
        else:
            if answer.drained:
                log.debug("node %s is drained", self.node)
        self._heartbeat_now = False
        self._next_heartbeat = now + self.heartbeat_interval_s

    def _check_name_held(self, refusal: DaemonRejected) -> None:
        """A 409 for the node: its name went to another machine while this one was away. Stop
        taking work under it and register again (refused while the other machine holds it)."""
        if refusal.status == 409:
            self.registered = False
            raise refusal

    def _poll_assignments(self, now: float) -> None:
        try:
            answer = self.client.assignments(self.node, self.machine_id)
        except UnknownNode:
            raise
        except DaemonRejected as exc:
            self._check_name_held(exc)
            raise
        self._next_poll = now + self.settings.poll_interval_s
        for assignment in answer.start:
            if self.runner.takes(assignment):  # listed until its started event lands
                inventory = self.inventory or self.fresh_inventory()
                self.runner.start(assignment, {device.uuid: device for device in inventory.devices})
        # A stop (preemption) is also in `cancel` for older agents: taken first, with its grace.
        for order in answer.stop:
            if self.runner.cancel(order.job_id, order.reason or "stopped by the daemon", grace_s=order.grace_s):
                log.info("job %d: stop requested by the daemon (grace %gs): %s", order.job_id, order.grace_s, order.reason)
        for job_id in answer.cancel:
            if self.runner.cancel(job_id):
                log.info("job %d: cancel requested by the daemon", job_id)

    def _ship_logs(self) -> None:
        for state in list(self.runner.jobs.values()):
            if state.log_done:
                continue
            path = self.runner.store.log_path(state.job_id)
            # A later run's output.log starts where the daemon's log of the job ends (log_base).
            size = state.log_base + (path.stat().st_size if path.exists() else 0)
            offset = max(state.log_offset, state.log_base)
            for _ in range(LOG_CHUNKS_PER_STEP):
                if offset >= size:
                    break
                with open(path, "rb") as handle:
                    handle.seek(offset - state.log_base)
                    data = handle.read(self.settings.log_chunk_bytes)
                try:
                    offset = self.client.put_log(self.node, state.job_id, offset, data)
                except LogOffsetMismatch as exc:
                    if state.assignment.run > 1 and state.log_offset == 0 and offset == state.log_base:
                        state.log_base = exc.size  # first upload of a later run: earlier runs' output comes first
                        size = state.log_base + size - offset
                    offset = exc.size  # the daemon's copy is the truth: resend from there
                except DaemonRejected as exc:
                    self._refuse("log", state.job_id, f"log upload at byte {offset} refused ({exc}); not shipping the rest",
                                 {"offset": offset, "bytes": len(data)})
                    state.log_done = True
                    break
            done = state.log_done or (state.outcome is not None and offset >= size)
            if offset != state.log_offset or done != state.log_done:
                state.log_offset, state.log_done = offset, done
                self.runner.save(state)

    def _flush_outbox(self) -> None:
        """Send queued events in order. A batch the daemon refuses with a 4xx is sent again one
        event at a time, so that only the event at fault is refused; see :meth:`_send_alone`."""
        pending = self.runner.outbox.pending()
        for start in range(0, len(pending), EVENTS_PER_REQUEST):
            batch = pending[start : start + EVENTS_PER_REQUEST]
            try:
                answer = self.client.send_events(self.node, [event for _, event in batch])
            except UnknownNode:
                raise
            except DaemonRejected as exc:
                for path, event in batch:
                    self._send_alone(path, event, exc if len(batch) == 1 else None)
                continue
            for (path, event), result in zip(batch, answer.results):
                self._settle(path, event, result)

    def _send_alone(self, path: Path, event: JobEvent, answer: JobEventResult | DaemonRejected | None = None) -> None:
        """Send one event; on a 4xx record the refusal and drop it, so the next one can go.

        An ``ended`` event with a message is tried once more without it: the message is the only
        free text an agent sends (it can hold whatever a failed command printed), and the outcome
        is worth more than the sentence. Transient errors (``DaemonUnavailable``) propagate: the
        event stays queued and the agent backs off.
        """
        answer = answer or self._send_one(event)
        if isinstance(answer, JobEventResult):
            self._settle(path, event, answer)
            return
        self._refuse("event", event.job_id, f"{event.kind} event refused: {answer}", event.model_dump(mode="json"))
        if event.kind == "ended" and event.message is not None:
            bare = event.model_copy(update={"message": None})
            answer = self._send_one(bare)
            if isinstance(answer, JobEventResult):
                log.info("job %d: ended event delivered without its message", event.job_id)
                self._settle(path, bare, answer)
                return
            self._refuse("event", event.job_id, f"ended event without its message refused too: {answer}",
                         bare.model_dump(mode="json"))
        self.runner.outbox.remove(path)

    def _send_one(self, event: JobEvent) -> JobEventResult | DaemonRejected:
        """The daemon's answer to one event, or its 4xx; ``UnknownNode`` and transient errors propagate."""
        try:
            [result] = self.client.send_events(self.node, [event]).results
        except UnknownNode:
            raise
        except DaemonRejected as exc:
            return exc
        return result

    def _settle(self, path: Path, event: JobEvent, result: JobEventResult) -> None:
        """The daemon answered this event: it leaves the outbox, accepted or not."""
        if not result.accepted:
            self._refuse("event", event.job_id, f"{event.kind} event not accepted: {result.reason}", event.model_dump(mode="json"))
            if event.kind == "started":
                self.runner.cancel(event.job_id, f"the daemon refused its start: {result.reason}")
        self.runner.outbox.remove(path)

    def _refuse(self, what: str, job_id: int, detail: str, report: dict[str, Any] | None = None) -> None:
        log.warning("job %d: %s; recorded in %s, going on", job_id, detail, self.refusals.path)
        self.refusals.record(what, job_id, detail, report)

def _bare_host() -> HostRecord:
    return HostRecord(hostname=socket.gethostname() or "localhost", cpu_cores=os.cpu_count() or 0,
                      memory_total_mib=psutil.virtual_memory().total // 2**20)


def build_agent(settings: AgentSettings, **kwargs: Any) -> Agent:
    """An agent over the collectors of ``agents.inventory`` (the fixture of ``settings.fake``, if
    set, with its device files under ``state_dir/fake-devices``)."""
    from agents import inventory

    fake_root = settings.state_dir / "fake-devices" if settings.fake is not None else None
    collectors = inventory.load_collectors(fake=settings.fake, enabled=settings.collectors, fake_root=fake_root)
    return Agent(
        settings,
        inventory_source=lambda: inventory.collect(collectors),
        watcher_factory=lambda on_event: inventory.make_health_watcher(collectors, on_event),
        close=lambda: inventory.close_collectors(collectors),
        **kwargs,
    )
