"""The never-fits view (``poold.scheduler.plan.Capacity``) judges on a fresh read whenever a
stale one could decide wrongly: a refusal, or a view with no node yet."""

from __future__ import annotations

from poold.db.session import transaction
from poold.scheduler.plan import Capacity
from poold.scheduler.request import PlacementRequest
from tests.builders import job, make_node


def _request(**resources) -> PlacementRequest:
    return PlacementRequest.from_spec(0, job(**resources))


def test_a_view_read_before_any_node_joined_is_read_again(pool, settings):
    capacity = Capacity(pool.factory, settings, refresh_s=3600)
    capacity.refresh()  # as the daemon does at start: no node yet
    with transaction(pool.factory) as session:
        make_node("a100").gpus(4, "A100", nvlink=12).register(session)
    verdict = capacity.never_fits(_request(count=8, accept=[{"model": "A100"}]))
    assert verdict is not None and "too_few_devices" in verdict.rejections.summary()


def test_a_refusal_is_judged_again_on_a_fresh_read(pool, settings):
    with transaction(pool.factory) as session:
        make_node("l4").gpus(2, "L4").register(session)
    capacity = Capacity(pool.factory, settings, refresh_s=3600)
    assert capacity.never_fits(_request(count=4, accept=[{"model": "A100"}])) is not None
    with transaction(pool.factory) as session:  # the A100 node joins after the view was read
        make_node("a100").gpus(4, "A100", nvlink=12).register(session)
    assert capacity.never_fits(_request(count=4, accept=[{"model": "A100"}])) is None


def test_a_gang_wider_than_the_pool_never_fits_naming_nodes(pool, settings):
    from poold.scheduler.blame import blamed_field

    with transaction(pool.factory) as session:
        make_node("hgx-1").gpus(8, "H100").register(session)
        make_node("hgx-2").gpus(8, "H100").register(session)
    capacity = Capacity(pool.factory, settings, refresh_s=3600)
    assert capacity.never_fits(_request(count=8, nodes=2)) is None
    verdict = capacity.never_fits(_request(count=8, nodes=3))
    assert verdict is not None and blamed_field(verdict.rejections) == "resources.nodes"
    # 24 over 8-GPU nodes: 3 parts of 8 at best, and only 2 nodes.
    verdict = capacity.never_fits(_request(count=24, same_node=False))
    assert verdict is not None and blamed_field(verdict.rejections) == "resources.count"
