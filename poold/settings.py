"""The daemon's settings: one typed object built at start-up from TOML and ``POOLD_*`` variables.

Precedence, lowest first: the defaults below, the TOML file, then environment variables.
A variable names a key path with ``__`` between levels: ``POOLD_DATABASE_URL``,
``POOLD_SCHEDULER__INTERVAL_S=0.5``, ``POOLD_PRICES__H100=3.9``. Values from the
environment are parsed as TOML values when they can be (numbers, booleans, arrays) and taken
as strings otherwise. Every error names the key path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from poold.entitlements import Entitlement
from poold_common.config import load_model
from poold_common.https import is_loopback
from poold_wire.messages import MAX_DEVICES_PER_NODE, MAX_EVENTS_PER_REQUEST

ENV_PREFIX = "POOLD_"
# Variables under POOLD_ that belong to someone else: the CLI, the agent, the fake-device
# harness, and the environment a job runs in. Everything else under POOLD_ must be a key.
NOT_DAEMON_NAMES = frozenset({"POOLD_CONFIG", "POOLD_URL", "POOLD_TOKEN", "POOLD_CA_FILE", "POOLD_NODE"})
NOT_DAEMON_PREFIXES = ("POOLD_AGENT_", "POOLD_FAKE_", "POOLD_JOB_", "POOLD_FPGA_", "POOLD_TEST_")
DEFAULT_CONFIG = Path("/etc/poold/poold.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    bind: str = Field(default="127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(default=8470, ge=0, le=65535)
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) the API is served with over HTTPS")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    allow_plain_http: bool = Field(
        default=False, description="serve plain HTTP on an address that is not loopback (tokens then cross the network in clear)"
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> "ServerSettings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both, or neither")
        return self

    def plain_http_refusal(self) -> str | None:
        """Why the API may not be served as configured, or None: plain HTTP is for loopback
        addresses unless ``allow_plain_http`` says otherwise."""
        if self.tls_cert is not None or self.allow_plain_http or is_loopback(self.bind):
            return None
        return (f"server.bind = {self.bind!r} is not a loopback address and no certificate is configured: set "
                "server.tls_cert and server.tls_key (`poold tls init` makes a CA and a certificate), or "
                "server.allow_plain_http = true to serve plain HTTP there anyway")


class SchedulerSettings(_Section):
    interval_s: float = Field(default=1.0, gt=0, le=3600, description="seconds between scheduling passes")
    max_jobs_per_pass: int = Field(default=10000, ge=1, description="pending jobs considered per pass")
    batch_size: int = Field(default=500, ge=1, le=10000, description="placements committed per transaction")
    count_outside_memory: bool = Field(
        default=True, description="device memory used by processes outside poold counts against what jobs may take"
    )
    cost_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="placements within this fraction of the cheapest cost per work count as equally cheap"
    )
    mix_half_life_jobs: float = Field(default=2000, gt=0, description="jobs after which a job counts half in the job mix")
    preempt_grace_max_s: float = Field(
        default=300.0, ge=0, le=86400, description="a preempted job's own grace_period is cut to this many seconds"
    )
    never_fits: Literal["refuse", "warn"] = Field(
        default="refuse", description="a job no device of the pool could hold even when empty: refused at submit, or accepted with a warning"
    )


class NodeSettings(_Section):
    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=3600)
    timeout_s: float = Field(
        default=30.0, gt=0,
        description="a node silent this long is lost: its jobs end lost and are submitted again as their retries allow",
    )
    quarantine_s: float = Field(
        default=300.0, ge=0, description="a device that was unhealthy stays out of placement this long once healthy again"
    )
    quarantine_flaps: int = Field(
        default=3, ge=1, description="unhealthy this many times within quarantine_flap_window_s: out until an admin returns it"
    )
    quarantine_flap_window_s: float = Field(default=3600.0, gt=0, description="the window quarantine_flaps counts in")


class QueueSettings(Entitlement):
    """A queue as the config file seeds it (see docs/queues.md for when the file wins)."""

    priority: int = Field(default=0, ge=-1000, le=1000, description="higher queues are scheduled first")
    description: str = ""


class LimitSettings(_Section):
    """Bounds on what callers may send, so that no request can take the daemon's memory or time."""

    request_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024, description="largest request body of any kind (413 past it)")
    log_chunk_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="largest log upload in one request")
    job_log_bytes: int = Field(default=1024**3, ge=1024, description="a job's log is refused past this size")
    events_per_request: int = Field(default=1000, ge=1, le=MAX_EVENTS_PER_REQUEST, description="job events in one agent report")
    devices_per_node: int = Field(default=1024, ge=1, le=MAX_DEVICES_PER_NODE, description="devices one node may report")


class AuthSettings(_Section):
    cache_s: float = Field(
        default=10.0, ge=0, le=300,
        description="a verified token is kept in memory this long: revoked on another daemon, it stops working within it",
    )
    run_as: dict[str, list[str]] = Field(
        default_factory=dict, description="per poold user, the Unix users their jobs may run as (a job file's `user`)"
    )
    run_as_own_name: bool = Field(default=False, description="every user may also run jobs as the Unix user of their own name")

    def may_run_as(self, user: str, unix_user: str) -> bool:
        """Whether poold user ``user`` may name ``unix_user`` in a job file (admins may name any)."""
        return unix_user in self.run_as.get(user, []) or (self.run_as_own_name and unix_user == user)


class AccountingSettings(_Section):
    sample_s: float = Field(
        default=30.0, ge=1, le=3600,
        description="seconds between samples of each held device's utilisation (the agents' latest figure), for `poold usage`",
    )


class Settings(_Section):
    state_dir: Path = Field(default=Path("/var/lib/poold"), description="SQLite file and job logs live here")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite in state_dir")
    migrate_on_start: bool = Field(default=True, description="bring the schema up to date when serve starts")
    log_level: str = "INFO"
    server: ServerSettings = Field(default_factory=ServerSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    nodes: NodeSettings = Field(default_factory=NodeSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    accounting: AccountingSettings = Field(default_factory=AccountingSettings)
    prices: dict[str, float] = Field(
        default_factory=dict, description="price per hour of one whole device, by chip model"
    )
    default_price_per_hour: float = Field(default=1.0, ge=0, description="for models without a price")
    queues: dict[str, QueueSettings] = Field(default_factory=lambda: {"default": QueueSettings()})

    @field_validator("prices")
    @classmethod
    def _non_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        for model, price in prices.items():
            if price < 0:
                raise ValueError(f"price of {model} is negative")
        return prices

    @field_validator("queues")
    @classmethod
    def _has_default(cls, queues: dict[str, QueueSettings]) -> dict[str, QueueSettings]:
        if "default" not in queues:
            queues = {"default": QueueSettings(), **queues}
        return queues

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'poold.db'}"

    def price_of(self, model: str) -> float:
        """Price per hour of one whole device of ``model`` (case-insensitive)."""
        for name, price in self.prices.items():
            if name.lower() == model.lower():
                return price
        return self.default_price_per_hour


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """The daemon's settings. ``path`` None means ``$POOLD_CONFIG``, then /etc/poold/poold.toml if present."""
    environ = os.environ if env is None else env
    if path is None:
        path = environ.get("POOLD_CONFIG") or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    own = {
        key: value
        for key, value in environ.items()
        if key not in NOT_DAEMON_NAMES and not key.startswith(NOT_DAEMON_PREFIXES)
    }
    return load_model(Settings, path, own, prefix=ENV_PREFIX)
