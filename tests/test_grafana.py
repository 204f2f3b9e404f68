"""The shipped Grafana dashboard and its provisioning, and the Prometheus example files: well
formed, every query valid PromQL (``promtool check rules``), the scrape config valid
(``promtool check config``). That every metric they name is exported is checked against a
live pool in tests/test_metrics_live.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.promql import metric_names, promtool, substitute

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "config" / "grafana"
PROMETHEUS = ROOT / "config" / "prometheus"


def dashboard() -> dict:
    return json.loads((GRAFANA / "poold.json").read_text())


def panels() -> list[dict]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def run_promtool(*args: str) -> None:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (model) (poold_devices{instance=~"$daemon",state="free"})', {"poold_devices"}),
    ("histogram_quantile(0.99, sum by (le) (rate(poold_submit_to_placed_seconds_bucket[$__rate_interval])))",
     {"poold_submit_to_placed_seconds_bucket"}),
    ('a_total / on(queue) group_left b{x="y"} > bool 1e3 unless c offset 5m', {"a_total", "b", "c"}),
    ('avg_over_time(DCGM_FI_DEV_GPU_UTIL{poold_job!=""}[1h]) < 5', {"DCGM_FI_DEV_GPU_UTIL"}),
])
def test_metric_names_of_an_expression(expr, names):
    assert metric_names(expr) == names


def test_the_dashboard_has_every_section_and_each_panel_a_query_on_the_chosen_datasource():
    board = dashboard()
    assert board["uid"] == "poold-pool"
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == ["Pool by model", "Queues and cost", "Per-job device use", "Node health", "Scheduler", "API"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # Each query, its Grafana variables filled in, as a recording rule: promtool parses it.
    exprs = [substitute(target["expr"]) for panel in panels() for target in panel["targets"]]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    run_promtool("check", "rules", str(path))


def test_the_rules_file_passes_promtool():
    run_promtool("check", "rules", str(PROMETHEUS / "rules.yml"))
    names = {rule.get("alert") for group in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"] for rule in group["rules"]}
    assert {"PooldNodeHeartbeatLate", "PooldDeviceUnhealthy", "PooldJobsPendingOverAnHour", "PooldIdleAllocatedGPU"} <= names


def test_the_scrape_config_passes_promtool(tmp_path):
    # Its token and CA files, as an operator puts them in place.
    (tmp_path / "poold.token").write_text("pld_example\n")
    (tmp_path / "ca.pem").write_text("")
    text = (PROMETHEUS / "prometheus.yml").read_text()
    text = text.replace("/etc/prometheus/poold.token", str(tmp_path / "poold.token")).replace("/etc/poold/tls/ca.pem", str(tmp_path / "ca.pem"))
    (tmp_path / "prometheus.yml").write_text(text)
    (tmp_path / "rules.yml").write_text((PROMETHEUS / "rules.yml").read_text())
    run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    config = yaml.safe_load(text)
    daemon = next(job for job in config["scrape_configs"] if job["job_name"] == "poold")
    assert daemon["authorization"]["type"] == "Bearer" and "credentials_file" in daemon["authorization"]


def test_grafana_provisioning_names_the_prometheus_datasource_and_the_dashboard_folder():
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "poold.yml").read_text())
    assert [source["type"] for source in sources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "poold.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
