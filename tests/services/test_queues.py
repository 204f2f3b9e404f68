"""Queues in the store, on both stores: the config file seeds them unless an admin changed
them since; usage counts whole devices (a MIG slice its part), cost, stopping jobs and waits."""

from __future__ import annotations

from datetime import datetime, timezone

from poold.db.session import transaction
from poold.jobspec import JobSpec
from poold.scheduler.loop import Scheduler
from poold.services import jobs, preemption, queues
from poold.services.queue_usage import queue_usage, whole_devices
from poold.settings import QueueSettings
from tests.builders import make_node

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def test_whole_devices_of_an_allocation():
    # share 1 of a whole GPU: 1; half of it: 0.5; a 3g slice (3 of 7 compute slices): 3/7.
    assert whole_devices(1.0, {}) == 1.0
    assert whole_devices(0.5, None) == 0.5
    assert whole_devices(1.0, {"mig_slices": 3}) == 3 / 7


def test_the_config_seeds_queues_an_admin_has_not_changed(pool, settings):
    settings.queues["research"] = QueueSettings(weight=2, guarantee={"gpu": 4})
    with transaction(pool.factory) as session:
        queues.sync_queues(session, settings)
        queues.update_queue(session, "interactive", queues.QueueChange(weight=5, limit={"cost": 9}), "alice", settings)
    settings.queues["research"] = QueueSettings(weight=3)
    settings.queues["interactive"] = QueueSettings(priority=1, weight=7)
    with transaction(pool.factory) as session:  # the next start
        queues.sync_queues(session, settings)
    with pool.factory() as session:
        research, interactive = queues.get_queue(session, "research"), queues.get_queue(session, "interactive")
        assert (research.weight, research.guarantees, research.changed_by) == (3.0, {}, None)
        assert (interactive.priority, interactive.weight, interactive.limits, interactive.changed_by) == (10, 5.0, {"cost": 9}, "alice")


def test_usage_counts_devices_cost_stopping_and_waits(pool, settings):
    with transaction(pool.factory) as session:
        make_node("a").gpus(2, "H100").mig(1, ["3g.40gb"]).register(session)

    def submit(**resources) -> int:
        with transaction(pool.factory) as session:
            return jobs.submit(session, JobSpec.model_validate({"name": "t", "command": ["true"], "resources": resources})).id

    whole = submit(count=1)
    sliced = submit(mig_profile="3g.40gb")
    assert sorted(Scheduler(pool.factory, settings).run_pass().placed) == [whole, sliced]
    waiting = submit(count=2)
    with transaction(pool.factory) as session:
        preemption.preempt(session, whole, waiting, "test", 300)
    with pool.factory() as session:
        usage = {entry.queue.name: entry for entry in queue_usage(session)}
        submitted = jobs.get_job(session, waiting).submitted_at
    default = usage["default"]
    assert default.devices == {"H100": round(1 + 3 / 7, 6)}
    assert round(default.cost_per_hour, 6) == round(4.0 + 4.0 * 3 / 7, 6)  # H100 at 4.00, the slice 3/7 of it
    assert (default.placed, default.stopping, default.pending, default.oldest_pending_at) == (2, 1, 1, submitted)
    assert (usage["interactive"].placed, usage["interactive"].pending, usage["interactive"].devices) == (0, 0, {})
