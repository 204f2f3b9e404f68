"""Every periodic job the daemon runs, registered in one place with its interval.

Each job is ``max_instances=1`` and coalesced: a pass that overruns is never run twice at
once, and missed runs collapse into one. Correctness never depends on the timer: a pass
commits under row locks (``poold.scheduler.commit``), so several daemons on one PostgreSQL
can run these jobs side by side.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from poold.api.context import AppContext
from poold.db.session import transaction
from poold.services import nodes
from poold_common.sdnotify import notify

log = logging.getLogger(__name__)

SCHEDULE_JOB = "schedule"


def register_jobs(scheduler: BackgroundScheduler, ctx: AppContext) -> None:
    settings = ctx.settings

    def schedule() -> None:
        result = ctx.scheduler.run_pass()
        if result.placed or result.lost_races:
            log.info("scheduling pass: placed %d, waiting %d, lost races %d", len(result.placed), len(result.waiting), len(result.lost_races))

    def node_timeout() -> None:
        with transaction(ctx.factory) as session:
            down = nodes.mark_silent_nodes_down(session, settings.nodes.timeout_s)
        if down:
            log.warning("nodes down (no heartbeat for %.0f s): %s", settings.nodes.timeout_s, ", ".join(down))

    def watchdog() -> None:
        notify("WATCHDOG=1")

    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    # Placement of pending jobs; also woken right after each submit (see wake()).
    scheduler.add_job(schedule, "interval", seconds=settings.scheduler.interval_s, id=SCHEDULE_JOB, **common)
    # Nodes that stopped heartbeating go down and take no new jobs.
    scheduler.add_job(node_timeout, "interval", seconds=max(1.0, settings.nodes.timeout_s / 3), id="node_timeout", jitter=1, **common)
    # systemd watchdog (a no-op outside systemd).
    scheduler.add_job(watchdog, "interval", seconds=5, id="watchdog", **common)


def wake(scheduler: BackgroundScheduler) -> None:
    """Run the scheduling pass now instead of at the next tick."""
    try:
        scheduler.modify_job(SCHEDULE_JOB, next_run_time=datetime.now(timezone.utc))
    except Exception:  # noqa: BLE001 - the scheduler shutting down; the next start schedules anyway
        log.debug("could not wake the scheduler", exc_info=True)
