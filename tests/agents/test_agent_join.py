"""The agent's credential: made before its join, taken by the daemon with the join token, kept
mode 0600, and the only token it sends from then on; a join whose answer was lost is sent
again with the same credential; a refused token keeps every report."""

from __future__ import annotations

import json
import stat

import pytest

from agents import credential
from poold_wire.messages import JobEvent
from tests.agents.agent_harness import Harness, ended, job
from tests.agents.fake_daemon import FakeDaemon


def test_the_agent_joins_once_and_then_sends_only_its_credential(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.assign(job(1, "echo hi"))
    harness.start()
    daemon.wait_for(lambda: ended(daemon, 1) and bytes(daemon.logs.get(1, b"")) == b"hi\n", what="job 1 ended and shipped")
    path = harness.settings.state_dir / credential.FILE
    kept = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (kept["node"], kept["machine_id"], kept["joined"]) == ("node-1", "machine-1", True)
    assert daemon.credentials == {"node-1": kept["token"]}
    assert daemon.registrations[0].credential == kept["token"]
    harness.stop()
    # Restarted without a join token: it registers with its credential.
    harness.settings = harness.settings.model_copy(update={"join_token": None})
    daemon.calls.clear()
    harness.start()
    daemon.wait_for(lambda: daemon.count("POST", "/heartbeat") >= 1, what="a heartbeat after the restart")
    assert daemon.count("POST", "/register", refused=False) == 1 and daemon.registrations[-1].credential is None


def test_a_join_whose_answer_was_lost_is_sent_again_with_the_same_credential(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.lose_join_answer = 1
    harness.start()
    daemon.wait_for(lambda: daemon.count("POST", "/heartbeat") >= 1, what="a heartbeat after the second join")
    first, second = daemon.registrations[:2]
    assert first.credential == second.credential == daemon.credentials["node-1"]


def test_without_a_join_token_the_agent_asks_for_one_and_keeps_trying(tmp_path, daemon: FakeDaemon, caplog) -> None:
    h = Harness(tmp_path / "agent", daemon)
    h.settings = h.settings.model_copy(update={"join_token": None})
    try:
        h.start()
        daemon.wait_for(lambda: "no join_token is set" in caplog.text, what="the agent saying what it needs")
        assert daemon.calls == []  # it sends nothing without a token
    finally:
        h.stop()


def test_a_refused_credential_keeps_every_report(harness: Harness, daemon: FakeDaemon, caplog) -> None:
    agent = harness.start()
    daemon.wait_for(lambda: daemon.count("POST", "/heartbeat") >= 1, what="the join")
    daemon.credentials["node-1"] = "revoked"  # an admin revoked it: every call is 401 now
    agent.runner.outbox.put(JobEvent(job_id=2, kind="started", at="2026-11-21T12:00:00Z"))
    calls = len(daemon.calls)
    daemon.wait_for(lambda: len(daemon.calls) >= calls + 3, what="calls refused and tried again")
    assert "does not take this node's token" in caplog.text
    assert len(agent.runner.outbox.pending()) == 1 and agent.refusals.entries() == []  # kept, not dropped as refused


def test_a_state_dir_of_another_node_is_refused_at_start(tmp_path) -> None:
    credential.save(tmp_path, credential.Credential(node="gpu-01", machine_id="m", token="pld_x", joined=True))
    with pytest.raises(credential.CredentialError, match="is node gpu-01's credential and this agent is node gpu-02"):
        credential.load_or_make(tmp_path, "gpu-02", "m")
