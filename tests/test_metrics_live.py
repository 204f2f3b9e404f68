"""A live demo pool's ``/metrics``, the daemon's and every agent's: ``promtool check metrics``
(Debian's ``prometheus`` package) passes on each, a running job shows on its device and in
the daemon's counts, and every metric the Grafana dashboard and the Prometheus rules query is
one that the daemon or an agent exports.

Without promtool the promtool checks skip, saying so, unless ``POOLD_TEST_REQUIRE_PROMTOOL=1``
(what .ci/run sets), where they fail.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from poold.demo import DemoPool, start_pool
from poold.jobspec import parse_job_text
from tests.promql import metric_names, promtool

ROOT = Path(__file__).resolve().parents[1]
# Holds one A100 until the pool is stopped.
LONG_JOB = """
name = "metrics-watch"
command = ["sleep", "300"]
[resources]
count = 1
kind = "gpu"
[[resources.accept]]
model = "A100"
"""


@dataclass
class Scrape:
    text: str
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def of(cls, text: str) -> "Scrape":
        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            scrape.samples.setdefault(family.name, [])
            for sample in family.samples:
                scrape.samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return scrape

    def value(self, name: str, **labels: str) -> float | None:
        hits = [value for found, value in self.samples.get(name, []) if labels.items() <= found.items()]
        return sum(hits) if hits else None


@dataclass
class LivePool:
    pool: DemoPool
    job_id: int
    node: str

    def daemon(self) -> Scrape:
        response = httpx.get(self.pool.url + "/metrics", headers={"Authorization": f"Bearer {self.pool.tokens.admin}"}, timeout=10)
        assert response.status_code == 200, response.text
        return Scrape.of(response.text)

    def agent(self, node: str) -> Scrape:
        response = httpx.get(self.pool.agent_metrics[node], timeout=10)
        assert response.status_code == 200, response.text
        return Scrape.of(response.text)


def wait_until(check, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LivePool]:
    pool = start_pool(tmp_path_factory.mktemp("metrics-demo"), say=lambda _: None)
    try:
        with pool.client() as client:
            job_id = client.submit(parse_job_text(LONG_JOB, "watch.toml").model_dump(mode="json"))["id"]
            job = wait_until(lambda: (found := client.job(job_id))["state"] == "running" and found, "the job to run")
        yield LivePool(pool, job_id, job["node"])
    finally:
        pool.stop()


def check_metrics(text: str) -> None:
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool check metrics: {result.stdout}{result.stderr}"


def test_promtool_passes_the_daemons_metrics(live):
    scrape = wait_until(lambda: (s := live.daemon()).value("poold_jobs", state="running") and s, "the job counted running")
    check_metrics(scrape.text)


@pytest.mark.parametrize("node", ["hgx-h100", "a100", "l4", "ascend", "alveo"])
def test_promtool_passes_each_agents_metrics(live, node):
    check_metrics(live.agent(node).text)


def test_the_running_job_shows_on_its_device_and_in_the_daemons_counts(live):
    agent = wait_until(lambda: (s := live.agent(live.node)).value("DCGM_FI_DEV_FB_FREE", poold_job=str(live.job_id)) is not None and s,
                       "the job on its agent's device")
    [labels] = [labels for labels, _ in agent.samples["DCGM_FI_DEV_FB_FREE"] if labels["poold_job"] == str(live.job_id)]
    assert labels["model"] == "A100" and labels["kind"] == "gpu" and labels["UUID"].startswith("GPU-")
    daemon = wait_until(lambda: (s := live.daemon()).value("poold_jobs", state="running", queue="default") and s, "a running job counted")
    assert daemon.value("poold_allocated_devices", model="A100") == 1
    assert daemon.value("poold_devices", model="A100", node=live.node, state="allocated") == 1
    assert daemon.value("poold_submit_to_placed_seconds_count") >= 1
    assert daemon.value("poold_leader") == 1
    assert daemon.value("poold_nodes", state="ready") == 5
    # Each agent registered once (its heartbeats may not have come yet on a busy machine).
    assert daemon.value("poold_api_requests_total", route="/api/v1/agents/register", method="POST", status="200") >= 5


def queried_names() -> dict[str, set[str]]:
    """Every metric name the dashboard's queries and the rules' expressions use, by where."""
    dashboard = json.loads((ROOT / "config" / "grafana" / "poold.json").read_text())
    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "rules.yml").read_text())
    exprs = {f"dashboard: {panel['title']} ({target['refId']})": target["expr"]
             for panel in dashboard["panels"] for target in panel.get("targets", [])}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs[f"dashboard variable {variable['name']}"] = variable["definition"].removeprefix("label_values(").split(",")[0]
    recorded = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            exprs[f"rules: {rule.get('alert') or rule.get('record')}"] = rule["expr"]
            recorded.add(rule.get("record"))
    return {where: metric_names(expr) - recorded for where, expr in exprs.items()}


def test_the_dashboard_and_rules_query_only_exported_metrics(live):
    # Every figure the demo can show: a running job (above), the agents' devices, a pass run.
    daemon = wait_until(lambda: (s := live.daemon()).value("poold_fragmentation_ratio") is not None and s, "fragmentation measured")
    exported = set(daemon.samples)
    for node in live.pool.agent_metrics:
        exported |= set(live.agent(node).samples)
    queried = queried_names()
    assert len(queried) > 40 and all(queried.values())  # every query and rule was read, and names a metric
    unknown = {where: sorted(names - exported) for where, names in queried.items() if names - exported}
    assert unknown == {}
