"""Rolling upgrades, agent side: this agent's client reads the answers of a newer daemon,
which carry fields it does not know, and says why a daemon refused its protocol."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from agents.client import DaemonClient, DaemonRejected
from poold_wire.messages import PROTOCOL_VERSION, HeartbeatRequest, JobEvent, RegisterRequest
from poold_wire.records import HostRecord

HOST = HostRecord(hostname="n1", cpu_cores=8, memory_total_mib=32768)

# Answers of a daemon of a later release: every object has a field this agent does not know.
NEWER_DAEMON = {
    "/api/v1/agents/register": {"node": "n1", "heartbeat_interval_s": 2.5, "leader": "poold-2", "protocol_version": 3},
    "/api/v1/agents/n1/heartbeat": {"ok": True, "drained": False, "adopt": [4], "kill": []},
    "/api/v1/agents/n1/assignments": {
        "start": [
            {
                "job_id": 4, "name": "train", "command": ["python", "train.py"], "env": {"A": "1"},
                "retries_left": 2, "devices": [
                    {"uuid": "GPU-1", "kind": "gpu", "vendor": "nvidia", "model": "H100", "share": 1.0, "mig_placement": 0},
                ],
            }
        ],
        "cancel": [],
        "reconcile": {"lost": []},
    },
    "/api/v1/agents/n1/events": {"results": [{"job_id": 4, "kind": "started", "accepted": True, "code": "ok"}], "next_batch": 100},
}


@pytest.fixture
def sent() -> list[dict]:
    return []


@pytest.fixture
def client(sent: list[dict]) -> DaemonClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.content:
            sent.append(json.loads(request.content))
        return httpx.Response(200, json=NEWER_DAEMON[request.url.path])

    return DaemonClient("http://daemon", transport=httpx.MockTransport(handle))


def test_client_reads_a_newer_daemons_answers(client: DaemonClient, sent: list[dict]) -> None:
    registered = client.register(RegisterRequest(node="n1", host=HOST, agent_version="0.1.0"))
    assert registered.node == "n1" and registered.heartbeat_interval_s == 2.5
    assert sent[0]["protocol_version"] == PROTOCOL_VERSION

    assert client.heartbeat("n1", HeartbeatRequest(host=HOST)).drained is False

    [assignment] = client.assignments("n1").start
    assert assignment.job_id == 4 and assignment.command == ["python", "train.py"]
    assert assignment.devices[0].uuid == "GPU-1"

    event = JobEvent(job_id=4, kind="started", at=datetime.now(timezone.utc), pid=99)
    assert client.send_events("n1", [event]).results[0].accepted


def test_refused_protocol_reaches_the_agent_with_the_daemons_words() -> None:
    detail = "protocol_version: the agent speaks protocol 2, this daemon serves agent protocol 1: upgrade the daemon"

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": detail})

    client = DaemonClient("http://daemon", transport=httpx.MockTransport(handle))
    with pytest.raises(DaemonRejected) as refused:
        client.register(RegisterRequest(node="n1", host=HOST, protocol_version=2))
    assert refused.value.status == 400 and detail in refused.value.detail
