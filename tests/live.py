"""A live daemon for tests that need a real server: ``poold serve`` as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from poold.demo import free_port
from poold.shipped import shipped_path


class LiveDaemon:
    def __init__(self, state_dir: Path, database_url: str | None = None, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        env = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_")}
        env.update(
            {
                "POOLD_CONFIG": str(shipped_path("config", "poold.toml")),
                "POOLD_STATE_DIR": str(state_dir),
                "POOLD_SERVER__PORT": str(self.port),
                "POOLD_SCHEDULER__INTERVAL_S": "0.2",
                "POOLD_NODES__HEARTBEAT_INTERVAL_S": "0.5",
                "POOLD_LOG_LEVEL": "WARNING",
            }
        )
        if database_url:
            env["POOLD_DATABASE_URL"] = database_url
        env.update(extra_env or {})
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(state_dir / "daemon.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "poold", "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("daemon exited: " + (self.state_dir / "daemon.log").read_text())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("daemon did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def wait_for(check, timeout_s: float = 20.0, interval_s: float = 0.1):
    """Poll ``check()`` until it returns something truthy; return it, or fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
