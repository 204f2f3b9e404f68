"""A live daemon for tests that need a real server: ``poold serve`` as a subprocess, its store
given a site's tokens before it starts (``poold.demo.prepare_site``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from poold.client import PooldClient
from poold.demo import free_port, prepare_site
from poold.shipped import shipped_path
from poold_common.https import client_context
from tests.auth import Credentials


class LiveDaemon:
    """``http`` calls the API as its callers would (``tests.auth.Credentials``: an admin, or a
    node's agent on its routes); ``client()`` is the CLI's client, ``cli_env`` the variables a
    ``poold`` command needs. ``tls``: a directory ``poold tls init`` made for 127.0.0.1, whose
    certificate the daemon serves and whose CA every client here verifies it against."""

    def __init__(self, state_dir: Path, database_url: str | None = None, extra_env: dict[str, str] | None = None,
                 tls: Path | None = None):
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.ca_file = tls / "ca.pem" if tls else None
        database_url = database_url or f"sqlite:///{state_dir / 'poold.db'}"
        self.tokens = prepare_site(database_url, nodes=100)
        self.http = httpx.Client(base_url=self.url, auth=Credentials(self.tokens), verify=client_context(self.ca_file), timeout=10)
        self.cli_env = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_")}
        self.cli_env.update({"POOLD_URL": self.url, "POOLD_TOKEN": self.tokens.admin, **({"POOLD_CA_FILE": str(self.ca_file)} if tls else {})})
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
        env["POOLD_DATABASE_URL"] = database_url
        if tls:
            env.update({"POOLD_SERVER__TLS_CERT": str(tls / "server.pem"), "POOLD_SERVER__TLS_KEY": str(tls / "server-key.pem")})
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
                if self.http.get("/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("daemon did not start")

    def client(self, token: str | None = None) -> PooldClient:
        """The CLI's client, as ``token`` (default: the admin)."""
        return PooldClient(self.url, token=token or self.tokens.admin, ca_file=self.ca_file)

    def stop(self) -> None:
        self.http.close()
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
