"""What an agent and a user send, as the API tests write it: register a node, heartbeat, report,
submit (with the tokens ``tests.auth.Credentials`` gives each)."""

from __future__ import annotations

from datetime import datetime, timezone

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc).isoformat()


def register(api, builder, **extra):
    body = {
        "node": builder.name,
        "host": builder.host.model_dump(mode="json"),
        "devices": [d.model_dump(mode="json") for d in builder.devices],
        "agent_version": "test",
        **extra,
    }
    response = api.post("/api/v1/agents/register", json=body)
    assert response.status_code == 200, response.text
    return body


def heartbeat(api, builder, running_jobs=(), headers=None, **extra):
    body = {"host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices],
            "running_jobs": list(running_jobs), **extra}
    return api.post(f"/api/v1/agents/{builder.name}/heartbeat", json=body, headers=headers)


def report(api, node, job_id, kind, **fields):
    """One job event from ``node``'s agent; the daemon's result for it."""
    event = {"job_id": job_id, "kind": kind, "at": NOW, **fields}
    response = api.post(f"/api/v1/agents/{node}/events", json={"events": [event]})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def submit(api, **resources):
    spec = {"name": "train", "command": ["sh", "-c", "echo hi"], "resources": resources}
    response = api.post("/api/v1/jobs", json={"spec": spec})
    assert response.status_code == 201, response.text
    return response.json()["id"]
