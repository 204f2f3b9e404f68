"""Every periodic job the daemon runs, registered in one place with its interval.

Each job is ``max_instances=1`` and coalesced: a pass that overruns is never run twice at
once, and missed runs collapse into one. With several daemons on one store, the scheduling
pass and the lost-node check run only on the replica holding the leader lock
(``poold.leader``); another takes over within a tick when it dies. Correctness never depends
on that: a pass commits under row locks (``poold.scheduler.commit``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from poold.api.context import AppContext
from poold.db.session import transaction
from poold.services import accounting, nodes, recovery
from poold_common.sdnotify import notify

log = logging.getLogger(__name__)

SCHEDULE_JOB = "schedule"
MIN_PASS_GAP_S = 0.1  # between the starts of passes run back to back
QUARANTINE_CHECK_S = 5.0  # a device returns at most this late after its quarantine ends


def register_jobs(scheduler: BackgroundScheduler, ctx: AppContext) -> Callable[[], None]:
    """Register the periodic jobs; returns the function that wakes the scheduling pass."""
    settings = ctx.settings
    woken = threading.Event()  # a wake that came while a pass ran: run another at once

    def schedule() -> None:
        if not ctx.leader.held():
            woken.clear()
            return
        while True:
            woken.clear()
            started = time.monotonic()
            result = ctx.scheduler.run_pass()
            if result.placed or result.lost_races:
                log.info("scheduling pass: placed %d, waiting %d, lost races %d", len(result.placed), len(result.waiting), len(result.lost_races))
            if not woken.is_set():
                return
            # Woken meanwhile: another pass, once what arrives in a short gap can join it (a
            # pass's fixed cost, reading every node's generation, is then paid per batch).
            time.sleep(max(0.0, MIN_PASS_GAP_S - (time.monotonic() - started)))

    def wake() -> None:
        """Run the scheduling pass now instead of at the next tick (or again once the running one
        ends). A wake already pending is enough: a burst of submits moves the scheduler's timer once."""
        if woken.is_set():
            return
        woken.set()
        try:
            scheduler.modify_job(SCHEDULE_JOB, next_run_time=datetime.now(timezone.utc))
        except Exception:  # noqa: BLE001 - the scheduler shutting down; the next start schedules anyway
            log.debug("could not wake the scheduler", exc_info=True)

    def node_timeout() -> None:
        if not ctx.leader.held():
            return
        with transaction(ctx.factory) as session:
            lost = recovery.mark_silent_nodes_lost(session, settings.nodes.timeout_s)
        if lost.nodes:
            log.warning("nodes lost (no heartbeat for %.0f s): %s; jobs lost: %s; submitted again as: %s",
                        settings.nodes.timeout_s, ", ".join(lost.nodes), lost.jobs or "none", lost.retries or "none")
            ctx.wake_scheduler()

    def quarantine_ends() -> None:
        if not ctx.leader.held():
            return
        with transaction(ctx.factory) as session:
            returned = nodes.release_quarantines(session)
        if returned:
            log.info("devices back in service after their quarantine: %s", ", ".join(returned))
            ctx.wake_scheduler()

    def refresh_capacity() -> None:
        ctx.capacity.refresh()

    def flush_reports() -> None:
        with transaction(ctx.factory) as session:
            ctx.reports.flush(session)

    def sample_utilization() -> None:
        with transaction(ctx.factory) as session:
            accounting.sample_utilization(session, ctx.reports, settings.accounting.sample_s)

    def watchdog() -> None:
        notify("WATCHDOG=1")

    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    # Placement of pending jobs; also woken right after each submit (see wake()).
    scheduler.add_job(schedule, "interval", seconds=settings.scheduler.interval_s, id=SCHEDULE_JOB, **common)
    # Nodes that stopped heartbeating are lost: no new jobs; their jobs lost, and retried.
    scheduler.add_job(node_timeout, "interval", seconds=max(1.0, settings.nodes.timeout_s / 3), id="node_timeout", jitter=1, **common)
    # The never-fits view kept fresh, so that submits do not reload it (every replica; at once on start).
    scheduler.add_job(refresh_capacity, "interval", seconds=ctx.capacity.refresh_s / 2, id="refresh_capacity",
                      next_run_time=datetime.now(timezone.utc), **common)
    # Heartbeats answered from memory: their seen marks to the store (every replica, its own).
    scheduler.add_job(flush_reports, "interval", seconds=1, id="flush_reports", **common)
    # Devices healthy again for nodes.quarantine_s return to service.
    scheduler.add_job(quarantine_ends, "interval", seconds=QUARANTINE_CHECK_S, id="quarantine_ends", jitter=1, **common)
    # Tokens in memory read again together, so that heartbeats never wait for theirs (every replica).
    scheduler.add_job(ctx.auth.revalidate, "interval", seconds=max(1.0, settings.auth.cache_s / 2), id="revalidate_tokens", **common)
    # Held devices' utilisation, from the agents' latest reports, into their allocations (every replica, its own reports).
    scheduler.add_job(sample_utilization, "interval", seconds=settings.accounting.sample_s, id="sample_utilization", jitter=1, **common)
    # systemd watchdog (a no-op outside systemd).
    scheduler.add_job(watchdog, "interval", seconds=5, id="watchdog", **common)
    return wake
