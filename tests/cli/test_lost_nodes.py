"""A node lost under a running ``poold submit --wait``: the job is submitted again and the
command follows the retry to its end. The test plays the node's agent over HTTP."""

from __future__ import annotations

import subprocess
import sys
import threading


from tests.builders import make_node
from tests.live import LiveDaemon, wait_for

AT = "2026-11-23T12:00:00Z"


def test_submit_wait_follows_a_job_lost_with_its_node_to_its_retry(tmp_path):
    daemon = LiveDaemon(tmp_path / "daemon", extra_env={"POOLD_NODES__TIMEOUT_S": "1"})
    node = make_node("n").gpus(1, "L4")
    register = {"node": "n", "host": node.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in node.devices],
                "machine_id": "m-n"}
    stop, beating = threading.Event(), threading.Event()

    def heartbeats() -> None:
        while not stop.wait(0.2):
            if beating.is_set():
                daemon.http.post("/api/v1/agents/n/heartbeat", json={"host": register["host"], "devices": register["devices"], "machine_id": "m-n"})

    beat = threading.Thread(target=heartbeats, daemon=True)

    job_file = tmp_path / "job.toml"
    job_file.write_text('name = "w"\ncommand = "true"\n')
    client = daemon.client()
    process = None
    try:
        daemon.http.post("/api/v1/agents/register", json=register).raise_for_status()
        beating.set()  # the agent is alive until the job is placed on its node (a slow start of the CLI outlives a 1 s timeout)
        beat.start()
        process = subprocess.Popen([sys.executable, "-m", "poold", "--url", daemon.url, "submit", "--wait", "--poll", "0.1", str(job_file)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.cli_env)
        first = int(process.stdout.readline())
        wait_for(lambda: client.job(first)["state"] != "pending", timeout_s=15)
        beating.clear()
        # No heartbeat comes now: the node is lost, and the job with it.
        retry = wait_for(lambda: client.job(first).get("requeued_as"), timeout_s=15)
        assert client.job(first)["state"] == "lost"
        assert client.job(retry)["retry_of"] == first and client.job(retry)["attempt"] == 2
        assert {n["name"]: n["state"] for n in client.nodes()} == {"n": "lost"}

        daemon.http.post("/api/v1/agents/register", json=register).raise_for_status()  # the agent is back
        beating.set()
        wait_for(lambda: [a["job_id"] for a in daemon.http.get("/api/v1/agents/n/assignments").json()["start"]] == [retry])
        events = [{"job_id": retry, "kind": "started", "at": AT}, {"job_id": retry, "kind": "ended", "at": AT, "exit_code": 0, "outcome": "succeeded"}]
        daemon.http.post("/api/v1/agents/n/events", json={"events": events}).raise_for_status()
        assert process.wait(timeout=30) == 0
        progress = process.stderr.read()
        assert f"job {first} lost" in progress and f"job {retry} succeeded" in progress
    finally:
        stop.set()
        if beat.is_alive():
            beat.join(timeout=5)
        if process is not None and process.poll() is None:
            process.kill()
        client.close()
        daemon.stop()
