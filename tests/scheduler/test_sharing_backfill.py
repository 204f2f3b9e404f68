"""Reservations (the earliest time a head job's placement fits), EASY backfill around them,
and fallback timing (``after`` on an accept entry). Times are seconds; now is 0 unless said."""

from __future__ import annotations

import pytest

from poold.scheduler.request import PlacementRequest
from tests.builders import job, make_node
from tests.scheduler.sharing_cases import Site, wants


def placed_ids(plan) -> list[int]:
    return [p.request.job_id for p in plan.placements]


@pytest.mark.parametrize(
    ("running", "count", "start"),
    [
        # 4 H100; job 10 holds 3 until 100, job 11 holds 1 until 300. 2 asked: 0 free now; at 100 three are: 100.
        ([(10, 3, 100.0), (11, 1, 300.0)], 2, 100.0),
        # 4 asked: only once both ended: 300.
        ([(10, 3, 100.0), (11, 1, 300.0)], 4, 300.0),
        # Ends are sorted whatever the order of the jobs: 1 asked, 11 (end 50) frees one first: 50.
        ([(10, 3, 100.0), (11, 1, 50.0)], 1, 50.0),
        # Job 11 has no max_runtime (never ends for this purpose): 4 asked can never be reserved.
        ([(10, 3, 100.0), (11, 1, None)], 4, None),
    ],
)
def test_reservation_is_the_earliest_time_the_placement_fits(settings, running, count, start):
    site = Site(settings, make_node("h").gpus(4, "H100"))
    for job_id, gpus, end in running:
        site.run(job_id, "h", gpus, max_runtime=end)
    plan = site.plan(0.0, wants(1, count=count))
    if start is None:
        assert 1 not in plan.reservations
        assert plan.waiting[1].endswith("no reservation: jobs without max_runtime hold what it needs")
    else:
        assert plan.reservations[1].start_s == start
        assert len(plan.reservations[1].devices) == count
        assert plan.waiting[1].startswith("devices reserved for it") and plan.reservations[1].start_s == start


@pytest.mark.parametrize(
    ("runtime", "extra_node", "backfilled"),
    [
        # Head job 1 wants 4 H100; job 10 holds 3 until 1000: reserved from 1000, 1 H100 free now.
        # Job 2 (1 H100, max_runtime 500) ends at 500 <= 1000: it runs ahead on the reserved device.
        (500.0, False, True),
        # ends at 1000 <= 1000: still in time.
        (1000.0, False, True),
        # ends at 2000 > 1000: it would delay the head; waits.
        (2000.0, False, False),
        # no max_runtime: never on reserved devices.
        (None, False, False),
        # an H100 node that the reservation does not need: used whatever the runtime.
        (None, True, True),
        (2000.0, True, True),
    ],
)
def test_easy_backfill(settings, runtime, extra_node, backfilled):
    nodes = [make_node("h").gpus(4, "H100")] + ([make_node("spare").gpus(1, "H100")] if extra_node else [])
    site = Site(settings, *nodes)
    site.run(10, "h", 3, max_runtime=1000.0, priority=5)  # above the head's priority: not preempted
    if extra_node:
        site.run(11, "spare", 1, max_runtime=5000.0)
        site.pool.release(11)  # the spare H100 is free again; job 11 stays a holder that ends at 5000
    plan = site.plan(0.0, wants(1, count=4, priority=1, max_runtime=100.0), wants(2, count=1, max_runtime=runtime))
    assert plan.reservations[1].start_s == 1000.0
    assert placed_ids(plan) == ([2] if backfilled else [])
    if backfilled and extra_node:
        assert site.where(plan.placements[0]) == ("spare", 1)


def test_without_backfill_the_queue_waits_behind_its_head(settings):
    site = Site(settings, make_node("h").gpus(4, "H100"), backfill=False)
    site.run(10, "h", 3, max_runtime=1000.0, priority=5)
    plan = site.plan(0.0, wants(1, count=4, priority=1), wants(2, count=1, max_runtime=10.0))
    assert placed_ids(plan) == []
    assert plan.waiting[2] == "behind job 1 in its queue's order (no backfill)"
    assert plan.reservations == {}


def test_each_queue_head_gets_a_reservation_and_they_do_not_overlap(settings):
    # 8 H100; jobs 10 and 11 of queue c hold 4 until 100 and 4 until 200. Heads of a and b want 4 each:
    # the first served (a, by name) takes the devices free at 100; b gets 11's at 200, not a's.
    site = Site(settings, make_node("h").gpus(8, "H100"), preemption=False)
    site.run(10, "h", 4, max_runtime=100.0, queue="c")
    site.run(11, "h", 4, max_runtime=200.0, queue="c")
    plan = site.plan(0.0, wants(1, queue="a", count=4), wants(2, queue="b", count=4))
    a, b = plan.reservations[1], plan.reservations[2]
    assert (a.start_s, b.start_s) == (100.0, 200.0)
    assert not set(a.devices) & set(b.devices)


# ---- fallback ------------------------------------------------------------------------------------

ACCEPT = [{"model": "H100", "speed": 2.5}, {"model": "A100", "speed": 1.0, "after": "15m"}]


@pytest.mark.parametrize(
    ("waited", "placed_on"),
    [
        # H100s all held; A100 opens after 15 min = 900 s of waiting.
        (600.0, None),
        (899.0, None),
        (900.0, "a100"),
        (3600.0, "a100"),
    ],
)
def test_fallback_opens_after_the_wait(settings, waited, placed_on):
    site = Site(settings, make_node("h").gpus(1, "H100"), make_node("a100").gpus(1, "A100"))
    site.run(10, "h", 1)
    plan = site.plan(1000.0 + waited, wants(1, submitted=1000.0, count=1, accept=ACCEPT))
    assert [site.where(p)[0] for p in plan.placements] == ([placed_on] if placed_on else [])
    if placed_on is None:
        # opens at submitted 1000 + 900 = 1900, shown for ``poold why``
        assert plan.fallbacks[1] == (("a100", 1900.0),)
    else:
        assert 1 not in plan.fallbacks


def test_before_the_wait_the_preferred_model_is_taken_when_free(settings):
    site = Site(settings, make_node("h").gpus(1, "H100"), make_node("a100").gpus(1, "A100"))
    plan = site.plan(10.0, wants(1, count=1, accept=ACCEPT))
    assert site.where(plan.placements[0]) == ("h", 1)


@pytest.mark.parametrize(
    ("waited", "models"),
    [
        # entries open at 0, 900 and 1800 s of waiting
        (0.0, ("h100",)),
        (900.0, ("h100", "a100")),
        (1800.0, ("h100", "a100", "l4")),
    ],
)
def test_narrowed_request_keeps_the_open_entries_with_its_own_signature(waited, models):
    full = PlacementRequest.from_spec(1, job(accept=ACCEPT + [{"model": "L4", "after": "30m"}]))
    assert full.accept_after_s == (0.0, 900.0, 1800.0)
    assert full.opens_at_s() == (("a100", 900.0), ("l4", 1800.0))
    narrowed = full.narrowed(waited)
    assert tuple(model for model, _ in narrowed.accept) == models
    assert (narrowed.signature == full.signature) == (len(models) == 3)
    assert (narrowed.static_key == full.static_key) == (len(models) == 3)


def test_a_request_without_after_is_never_narrowed():
    request = PlacementRequest.from_spec(1, job(accept=[{"model": "H100"}, {"model": "A100"}]))
    assert request.accept_after_s == ()
    assert request.narrowed(0.0) is request
