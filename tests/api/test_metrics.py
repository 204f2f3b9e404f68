"""The daemon's ``/metrics``: behind a token, one registry per app, devices and jobs as the
store has them, the scheduler's passes, the API's requests by route template."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from poold.api.app import create_app
from poold.api.context import AppContext
from poold.db.models import AllocationModel, utcnow
from poold.db.session import transaction
from tests.auth import authorised, bearer
from tests.builders import make_node, register_nodes, submit_job


def scrape(client: TestClient) -> dict[str, dict[tuple, float]]:
    """Sample name -> {sorted label pairs: value} of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(tuple(sorted(labels.items())))


@pytest.fixture
def settings(settings):
    """The API's (tests/api/conftest.py), with every scrape reading the store."""
    settings.metrics.cache_s = 0
    return settings


def test_metrics_take_a_user_or_admin_token(api):
    assert api.get("/metrics", headers={"Authorization": ""}).status_code == 401
    user = api.auth.site.user
    assert api.get("/metrics", headers=bearer(user)).status_code == 200
    assert api.get("/metrics", headers=bearer(api.auth.site.join)).status_code == 403


def test_devices_and_slices_by_state_and_a_placed_job(api, pool, ctx):
    register_nodes(pool, make_node("hgx").gpus(2, "H100").mig(1, ["3g.40gb", "1g.10gb"]), make_node("npu").npus(2))
    job = submit_job(pool, count=1, accept=[{"model": "H100"}])
    placed = ctx.scheduler.run_pass().placed
    assert placed == [job]
    samples = scrape(api)
    # GPU 0 held by the job; GPU 1 split into slices, both free; NPUs free.
    assert value(samples, "poold_devices", model="H100", kind="gpu", node="hgx", state="allocated") == 1
    assert value(samples, "poold_devices", model="H100", kind="gpu", node="hgx", state="free") == 1
    assert value(samples, "poold_devices", model="910B", kind="npu", node="npu", state="free") == 2
    assert value(samples, "poold_mig_slices", model="H100", profile="3g.40gb", node="hgx", state="free") == 1
    assert value(samples, "poold_mig_slices", model="H100", profile="1g.10gb", node="hgx", state="free") == 1
    assert value(samples, "poold_jobs", state="assigned", queue="default") == 1
    assert value(samples, "poold_jobs", state="pending", queue="default") == 0
    assert value(samples, "poold_oldest_pending_age_seconds", queue="default") == 0
    assert value(samples, "poold_queue_cost_per_hour", queue="default") == pytest.approx(4.0)  # one H100 at 4.0/h
    assert value(samples, "poold_nodes", state="ready") == 2
    assert 0 <= value(samples, "poold_node_heartbeat_age_seconds", node="hgx") < 60
    # By model: GPU 0 held; GPU 1 free (nothing held on it or its slices); a price of 4.0/h.
    assert value(samples, "poold_allocated_devices", model="H100") == 1
    assert value(samples, "poold_free_devices", model="H100") == 1
    assert value(samples, "poold_free_devices", model="910B") == 2
    assert value(samples, "poold_allocated_memory_bytes", model="H100") > 0
    assert value(samples, "poold_free_mig_slices", model="H100", profile="3g.40gb") == 1
    assert value(samples, "poold_device_price_per_hour", model="H100") == 4.0
    assert 0 <= value(samples, "poold_fragmentation_ratio", model="H100") <= 1  # this app's scheduler ran a pass
    assert value(samples, "poold_queue_cost_total", queue="default") >= 0
    assert value(samples, "poold_queue_cost_total", queue="interactive") == 0
    assert value(samples, "poold_submit_to_placed_seconds_count") == 1
    assert value(samples, "poold_placements_total") == 1
    assert value(samples, "poold_placements_per_pass_count") == 1
    assert value(samples, "poold_scheduling_pass_duration_seconds_count") == 1


def test_a_slice_held_makes_its_gpu_allocated(api, pool, ctx):
    register_nodes(pool, make_node("hgx").gpus(1, "H100").mig(0, ["3g.40gb", "1g.10gb"]))
    submit_job(pool, count=1, mig_profile="1g.10gb")
    assert ctx.scheduler.run_pass().placed
    samples = scrape(api)
    assert value(samples, "poold_devices", model="H100", kind="gpu", node="hgx", state="allocated") == 1
    assert value(samples, "poold_mig_slices", model="H100", profile="1g.10gb", node="hgx", state="allocated") == 1
    assert value(samples, "poold_mig_slices", model="H100", profile="3g.40gb", node="hgx", state="free") == 1


def test_a_waiting_job_ages_and_an_unhealthy_device_is_counted(api, pool, ctx):
    # A device reported unhealthy is quarantined at once (poold.services.quarantine).
    register_nodes(pool, make_node("l4").gpus(1, "L4", health="unhealthy"))
    submit_job(pool, count=1, accept=[{"model": "L4"}])
    ctx.scheduler.run_pass()
    samples = scrape(api)
    assert value(samples, "poold_devices", model="L4", kind="gpu", node="l4", state="quarantined") == 1
    assert value(samples, "poold_jobs", state="pending", queue="default") == 1
    assert value(samples, "poold_oldest_pending_age_seconds", queue="default") > 0
    assert value(samples, "poold_placements_per_pass_count") == 1 and value(samples, "poold_placements_total") == 0


def test_requests_are_counted_by_route_template_and_status(api):
    api.get("/api/v1/jobs/123456")
    api.get("/api/v1/jobs/654321")
    api.get("/api/v1/jobs", headers={"Authorization": ""})
    api.get("/no/such/path")
    samples = scrape(api)
    requests = samples["poold_api_requests_total"]
    assert value(samples, "poold_api_requests_total", route="/api/v1/jobs/{job_id}", method="GET", status="404") == 2
    assert value(samples, "poold_api_requests_total", route="/api/v1/jobs", method="GET", status="401") == 1
    assert value(samples, "poold_api_requests_total", route="other", method="GET", status="404") == 1
    assert not any("123456" in label for labels in requests for _, label in labels)
    assert value(samples, "poold_api_request_duration_seconds_count", route="/api/v1/jobs/{job_id}") == 2


def test_a_body_refused_before_routing_is_counted_under_its_route(api, ctx):
    limit = ctx.settings.limits.request_bytes
    response = api.post("/api/v1/jobs", content=b"x", headers={"content-length": str(limit + 1), "content-type": "application/json"})
    assert response.status_code == 413
    assert value(scrape(api), "poold_api_requests_total", route="/api/v1/jobs", method="POST", status="413") == 1


def test_store_figures_are_reused_within_cache_s(pool, settings):
    settings.metrics.cache_s = 300
    with authorised(TestClient(create_app(AppContext.build(settings, pool.factory))), pool.factory) as api:
        register_nodes(pool, make_node("a").gpus(1, "A100"))
        assert value(scrape(api), "poold_devices", model="A100", kind="gpu", node="a", state="free") == 1
        register_nodes(pool, make_node("b").gpus(1, "A100"))
        assert value(scrape(api), "poold_devices", model="A100", kind="gpu", node="b", state="free") is None


def test_each_app_has_its_own_registry_and_says_whether_it_leads(pool, settings):
    first, second = AppContext.build(settings, pool.factory), AppContext.build(settings, pool.factory)
    with authorised(TestClient(create_app(first)), pool.factory) as one, authorised(TestClient(create_app(second)), pool.factory) as two:
        one.get("/api/v1/jobs")
        assert value(scrape(one), "poold_api_requests_total", route="/api/v1/jobs", method="GET", status="200") == 1
        assert value(scrape(two), "poold_api_requests_total", route="/api/v1/jobs", method="GET", status="200") is None
        assert value(scrape(one), "poold_leader") == 0
        assert first.leader.held()
        assert value(scrape(one), "poold_leader") == 1
        assert value(scrape(two), "poold_leader") == 0
        first.leader.release()
        assert value(scrape(one), "poold_build_info", version=__import__("poold").__version__) == 1


def test_accrued_cost_is_price_times_time_held_and_no_pass_means_no_fragmentation(api, pool, ctx):
    register_nodes(pool, make_node("a100").gpus(2, "A100"))
    samples = scrape(api)
    assert value(samples, "poold_free_devices", model="A100") == 2
    assert "poold_fragmentation_ratio" not in samples  # no pass ran here: a replica that does not lead
    job = submit_job(pool, count=2, accept=[{"model": "A100"}])
    assert ctx.scheduler.run_pass().placed == [job]
    with transaction(pool.factory) as session:  # placed two hours ago
        session.execute(update(AllocationModel).where(AllocationModel.job_id == job).values(created_at=utcnow() - timedelta(hours=2)))
    samples = scrape(api)
    # Two A100s at 2.2/h each, held two hours: 8.8.
    assert value(samples, "poold_queue_cost_total", queue="default") == pytest.approx(8.8, rel=1e-3)
    assert value(samples, "poold_queue_cost_per_hour", queue="default") == pytest.approx(4.4)


def test_an_app_made_again_over_one_context_reports_each_figure_once(pool, settings):
    context = AppContext.build(settings, pool.factory)
    create_app(context)
    with authorised(TestClient(create_app(context)), pool.factory) as api:
        response = api.get("/metrics")
    assert response.text.count("\npoold_leader ") == 1 and response.text.count("# TYPE poold_nodes gauge") == 1
