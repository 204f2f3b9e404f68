"""systemd integration: sd_notify, the agent's notifications as a process, and the units."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from poold_common.sdnotify import notify, watchdog_interval_s

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "config" / "systemd"
BIN = Path(sys.executable).parent


def receive(sock: socket.socket, timeout_s: float = 5.0) -> str:
    sock.settimeout(timeout_s)
    return sock.recv(4096).decode()


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_reaches_the_socket(tmp_path: Path, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if abstract:
            name = f"poold-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            address = "@" + name
        else:
            address = str(tmp_path / "notify")
            sock.bind(address)
        assert notify("READY=1\nSTATUS=up", env={"NOTIFY_SOCKET": address}) is True
        assert receive(sock) == "READY=1\nSTATUS=up"


def test_notify_without_systemd_is_a_no_op(tmp_path: Path) -> None:
    assert notify("READY=1", env={}) is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_watchdog_interval() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None


def test_agent_process_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    pytest.importorskip("agents.fake", reason="the mocked-device harness (agents.fake) is not available")
    with socket.socket() as free:  # a port nobody listens on: the daemon is down
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_")}
        env.update(NOTIFY_SOCKET=address, POOLD_AGENT_POLL_INTERVAL_S="0.1")
        agent = subprocess.Popen(
            [sys.executable, "-c", "from agents.cli import main; main()", "run", "--fake", "l4-2",
             "--server", f"http://127.0.0.1:{port}", "--node", "node-x", "--state-dir", str(tmp_path / "state")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            assert receive(sock, 20) == "READY=1\nSTATUS=daemon unreachable, retrying"
            assert receive(sock) == "WATCHDOG=1"
            agent.send_signal(signal.SIGTERM)
            messages = []
            deadline = time.monotonic() + 10
            while "STOPPING=1" not in messages and time.monotonic() < deadline:
                messages.append(receive(sock))
            assert messages[-1] == "STOPPING=1"
            assert agent.wait(timeout=10) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
            output = agent.communicate()[0].decode()
    assert "Traceback" not in output


def unit(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_agent_unit_leaves_jobs_running_and_can_switch_users() -> None:
    agent = unit("poold-agent.service")
    assert agent["Type"] == ["notify"] and agent["NotifyAccess"] == ["main"]
    assert agent["KillMode"] == ["process"]
    assert agent["StateDirectory"] == ["poold-agent"]
    assert agent["Restart"] == ["on-failure"] and agent["WatchdogSec"]
    assert "NoNewPrivileges" not in agent and "User" not in agent
    assert agent["ExecStart"][0].endswith("poold-agent run --config /etc/poold/agent.toml")


def test_daemon_unit_is_sandboxed() -> None:
    daemon = unit("poold.service")
    assert daemon["Type"] == ["notify"] and daemon["NotifyAccess"] == ["main"]
    assert daemon["ExecStart"][0].endswith("poold serve --config /etc/poold/poold.toml")
    assert (daemon["User"], daemon["StateDirectory"]) == (["poold"], ["poold"])
    assert daemon["NoNewPrivileges"] == daemon["PrivateTmp"] == ["yes"]
    assert daemon["ProtectSystem"] == ["strict"] and daemon["ReadWritePaths"] == ["/var/lib/poold"]
    assert daemon["Restart"] == ["on-failure"] and daemon["WatchdogSec"]


@pytest.mark.parametrize(("name", "script"), [("poold.service", "poold"), ("poold-agent.service", "poold-agent")])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, name: str, script: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; units not verified")
    if not (BIN / script).exists():
        pytest.skip(f"{BIN / script} is missing (install the package: pip install -e .)")
    # verify insists that ExecStart's binary exists: point it at this environment's script.
    text = (UNITS / name).read_text().replace("ExecStart=/opt/poold/bin/", f"ExecStart={BIN}/")
    assert f"ExecStart={BIN}/{script} " in text
    copy = tmp_path / name
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if name in line]
    assert problems == [], problems
