"""The dashboard as a person sees it: headless Chromium opens ``/`` of a live demo pool with the
admin's ``#token=`` link (what ``poold demo --keep`` prints), and the page it rendered is read
back (``--dump-dom``) and checked against the API: every node and device (MIG slices inside
their GPU), a running job labelled on its device, a pending job with its reason, the queue's
usage, the events, and a hostile string drawn as text. A screenshot is taken too
(``docs/dashboard.png`` with ``POOLD_TEST_SAVE_SCREENSHOT=1``).

Without Chromium the tests skip, unless ``POOLD_TEST_REQUIRE_BROWSER=1`` (what .ci/run sets),
where they fail.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from poold import demo
from poold.client import PooldClient
from tests.browser import CHROMIUM, DevTools, Element, chromium, render
from tests.live import wait_for

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<img src=x onerror=alert(1)>"
WINDOW = (1400, 1000)

if CHROMIUM is None:
    if os.environ.get("POOLD_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail("no chromium on PATH, and POOLD_TEST_REQUIRE_BROWSER=1 makes the browser test mandatory "
                    "(apt-get install --no-install-recommends chromium)", pytrace=False)
    pytest.skip("no chromium on PATH: the dashboard's browser test is skipped (apt-get install --no-install-recommends chromium)",
                allow_module_level=True)


# ---- the site ----------------------------------------------------------------------------


@dataclass
class Site:
    pool: demo.DemoPool
    admin: PooldClient
    running: dict
    pending: dict


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A demo pool with one job running on an L4 (`sleep 600`; the pool's end stops it), one waiting for both L4s (the
    pool could place it once the first ends), and node alveo drained for a hostile reason."""
    workdir = demo.make_workdir()
    pool = demo.start_pool(workdir, lambda _text: None)
    admin = pool.client(pool.tokens.admin)
    try:
        with pool.client() as user:
            job = {"name": "train-l4", "command": ["sleep", "600"], "resources": {"kind": "gpu", "count": 1, "accept": [{"model": "L4"}]}}
            running = user.submit(job)
            running = wait_for(lambda: (seen := user.job(running["id"]))["state"] == "running" and seen, timeout_s=30)
            both = {"name": "wait-both-l4", "command": ["true"], "resources": {"kind": "gpu", "count": 2, "accept": [{"model": "L4"}]}}
            pending = user.submit(both)
            pending = wait_for(lambda: (seen := user.job(pending["id"]))["reason"] != "waiting for the scheduler" and seen, timeout_s=30)
        admin.drain("alveo", HOSTILE)
        yield Site(pool, admin, running, pending)
    finally:
        admin.close()
        pool.stop()
        demo.remove_workdir(workdir)


@pytest.fixture(scope="module")
def page(site, tmp_path_factory) -> Element:
    return render(f"{site.pool.url}/#token={site.pool.tokens.admin}", tmp_path_factory.mktemp("chromium"))


# ---- what a person sees ------------------------------------------------------------------


def test_every_node_and_device_is_on_the_map_with_slices_inside_their_gpu(site, page):
    nodes = {node["name"] for node in site.admin.nodes()}
    devices = site.admin.devices()
    drawn = page.one(id="map")
    assert {card.attrs["data-node"] for card in drawn.all("article")} == nodes
    for device in devices:
        card = drawn.one("article", data_node=device["node"])
        [tile] = card.all(data_device=device["uuid"])  # NPU and FPGA ids are unique within a node only
        if device["parent_uuid"]:
            assert "slice" in tile.classes and tile.attrs["data-parent"] == device["parent_uuid"]
            parent = card.one("div", data_device=device["parent_uuid"])
            assert tile in parent.all(), f"slice {device['uuid']} is not drawn inside its GPU"
        else:
            assert "device" in tile.classes
    slices = [device for device in devices if device["parent_uuid"]]
    assert slices, "the demo's H100 node has GPU 0 in MIG mode"


def test_each_device_has_the_colour_of_its_state(site, page):
    states = {}
    for device in site.admin.devices():
        [tile] = page.one("article", data_node=device["node"]).all(data_device=device["uuid"])
        states[device["node"], device["uuid"]] = tile.attrs["data-state"]
        assert tile.attrs["data-state"] in tile.classes  # the class is what the style sheet colours
        if device["node"] == "alveo":
            assert tile.attrs["data-state"] == "down"  # drained, and nothing held on it
        elif device["quarantine"] or device["health"] != "ok":
            assert tile.attrs["data-state"] == "unhealthy"
        elif device["allocated_share"] >= 1:
            assert tile.attrs["data-state"] == "allocated"
    [held] = [(alloc["node"], alloc["device_uuid"]) for alloc in site.running["allocations"]]
    assert states[held] == "allocated"
    assert list(states.values()).count("free") >= 10


def test_the_running_job_is_labelled_on_its_device_with_its_price(site, page):
    job = site.running
    [alloc] = job["allocations"]
    tile = page.one(id="map").one(data_device=alloc["device_uuid"], data_node=alloc["node"])
    label = tile.one("span", data_job_id=str(job["id"]))
    assert label.text == f"#{job['id']} train-l4"
    row = page.one(id="running").one("tr", data_job_id=str(job["id"]))
    cells = [cell.text for cell in row.all("td")]
    assert cells[:7] == [str(job["id"]), "train-l4", "demo", "default", "running", "l4", "L4"]
    assert cells[7] == f"{job['price_per_hour']:.2f}"
    [account] = [row for row in site.admin.usage(by="job", states=("running",))["rows"] if row["job_id"] == job["id"]]
    cost = float(row.one("td", data_cost=None).attrs["data-cost"])
    assert 0 < cost <= account["cost"] and cells[8] == f"{cost:.2f}"  # accrued by the time the page asked: no more than now


def test_each_model_has_its_figures(site, page):
    models = {model["model"]: model for model in site.admin.pool()["models"]}
    rows = {row.attrs["data-model"]: row for row in page.one(id="models").all("tr", data_model=None)}
    assert set(rows) == set(models) >= {"H100", "A100", "L4", "910B", "U250"}
    for name, model in models.items():
        cells = [cell.text for cell in rows[name].all("td")]
        assert cells[:5] == [name, model["kind"], str(model["devices"]), str(model["in_service"]), str(model["free"])]
        assert cells[8] == ("\u2014" if model["fragmentation"] is None else f"{model['fragmentation'] * 100:.0f}%")
        assert cells[9] == f"{model['price_per_hour']:.2f}"
    assert [rows["L4"].all("td")[i].text for i in (2, 4)] == ["2", "1"]  # one L4 held by the running job
    assert "1g.10gb 2/2" in rows["H100"].all("td")[6].text  # GPU 0's slices, none held


def test_the_pending_job_shows_its_reason(site, page):
    job = site.pending
    row = page.one(id="pending").one("tr", data_job_id=str(job["id"]))
    reason = row.one("td", data_reason="").text
    now = site.admin.job(job["id"])["reason"]
    assert now and reason in (job["reason"], now), (reason, now)
    assert row.all("td")[1].text == "wait-both-l4"


def test_the_queue_shows_what_its_jobs_hold(site, page):
    [queue] = [q for q in site.admin.queues() if q["name"] == "default"]
    assert queue["devices"] == {"L4": 1.0}
    row = page.one(id="queues").one("tr", data_queue="default")
    assert row.one(data_placed=None).attrs["data-placed"] == "1"
    assert row.one(data_pending=None).attrs["data-pending"] == "1"
    use = row.one("div", data_key="L4")
    assert use.attrs["data-used"] == "1" and use.text.startswith("L4 1")


def test_recent_events_are_listed_newest_first(site, page):
    latest = site.admin.events(limit=40)
    drawn = [int(row.attrs["data-event-id"]) for row in page.one(id="events").all("tr", data_event_id=None)]
    assert drawn and drawn == sorted(drawn, reverse=True)
    assert set(drawn) <= {event["id"] for event in site.admin.events(limit=500)}
    assert drawn[0] >= min(event["id"] for event in latest)
    assert site.admin.events(limit=1, node="alveo", kind="node.drained")[0]["id"] in drawn


def test_a_hostile_string_is_drawn_as_text(site, page):
    assert page.all("img") == []  # no element was made from it
    node = page.one(id="map").one("article", data_node="alveo")
    assert node.attrs["data-node-state"] == "drained" and "down" in node.classes
    assert node.one("div", **{"class": "node-down"}).text == f"drained: {HOSTILE}"
    messages = [row.all("td")[-1].text for row in page.one(id="events").all("tr", data_kind="node.drained")]
    assert any(HOSTILE in message for message in messages)


def test_a_bad_token_shows_the_sign_in_form_with_the_error(site, tmp_path):
    page = render(f"{site.pool.url}/#token=pld_nope", tmp_path / "profile")
    assert page.one("body").attrs["data-view"] == "sign-in"
    assert "hidden" not in page.one("form", id="sign-in").attrs
    assert "hidden" in page.one("main", id="board").attrs
    error = page.one(id="sign-in-error")
    assert "hidden" not in error.attrs and "401" in error.text


@pytest.fixture
def tab(tmp_path):
    """A live tab, for what the dumped DOM cannot show: typing, the address bar, refreshes."""
    devtools = DevTools(tmp_path / "profile")
    yield devtools
    devtools.close()


def test_the_token_link_signs_in_and_leaves_the_address_bar(site, tab):
    tab.open(f"{site.pool.url}/#token={site.pool.tokens.user}")
    tab.until("document.body.dataset.view === 'board'")
    assert tab.evaluate("location.href") == site.pool.url + "/"  # the token is out of the address bar (and history)
    assert tab.evaluate("sessionStorage.getItem('poold.token')") == site.pool.tokens.user
    tab.evaluate("document.getElementById('sign-out').click()")
    assert tab.evaluate("document.body.dataset.view") == "sign-in"
    assert tab.evaluate("sessionStorage.getItem('poold.token')") is None


def test_the_sign_in_form_takes_a_token(site, tab):
    tab.open(site.pool.url + "/")
    tab.until("document.body.dataset.view === 'sign-in'")
    assert tab.evaluate("getComputedStyle(document.getElementById('board')).display") == "none"
    assert tab.evaluate("getComputedStyle(document.getElementById('sign-in')).display") == "block"
    tab.evaluate(f"document.getElementById('token').value = {json.dumps(site.pool.tokens.user)};"
                 "document.getElementById('sign-in').requestSubmit()")
    tab.until("document.body.dataset.view === 'board' && document.querySelectorAll('#map article').length")
    assert tab.evaluate("getComputedStyle(document.getElementById('sign-in')).display") == "none"
    assert tab.evaluate("document.getElementById('token').value") == ""  # not left in the form


def test_a_failing_call_shows_in_its_place_and_the_rest_refreshes(site, tab):
    tab.intercept("*/api/v1/pool*", 500, {"detail": "the overview broke"})
    tab.open(f"{site.pool.url}/#token={site.pool.tokens.admin}")
    tab.until("Number(document.body.dataset.refreshes) >= 2")  # it refreshed by itself
    page = tab.dom()
    error = page.one(data_error="models")
    assert "hidden" not in error.attrs and error.text == "/pool: 500 the overview broke"
    assert page.one(id="models").all("tr", data_model=None) == []
    assert {card.attrs["data-node"] for card in page.one(id="map").all("article")} == {node["name"] for node in site.admin.nodes()}
    assert page.one(id="running").all("tr", data_job_id=str(site.running["id"]))
    for section in ("map", "queues", "running", "pending", "events"):
        assert "hidden" in page.one(data_error=section).attrs, section
    assert page.one(id="refreshed").text.endswith("1 of 8 calls failed")


def test_a_screenshot_of_the_dashboard(site, tmp_path):
    """A 1400x1000 PNG of the page; ``POOLD_TEST_SAVE_SCREENSHOT=1`` keeps it as docs/dashboard.png."""
    target = ROOT / "docs" / "dashboard.png" if os.environ.get("POOLD_TEST_SAVE_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
    target.unlink(missing_ok=True)
    time.sleep(1)  # heartbeats come in: the figures on the page are the agents'
    chromium(f"{site.pool.url}/#token={site.pool.tokens.admin}", tmp_path / "profile",
             f"--screenshot={target}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == WINDOW
    assert len(data) > 20_000  # a drawn page, not a blank one
