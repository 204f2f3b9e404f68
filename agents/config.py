"""The agent's settings: one typed object built at start-up from TOML and ``POOLD_AGENT_*`` variables.

Precedence, lowest first: the defaults below, the TOML file (``config/agent.toml`` documents
every key), then environment variables such as ``POOLD_AGENT_SERVER_URL`` or
``POOLD_AGENT_COLLECTORS='["nvidia", "ascend"]'``, then command-line flags. Every error
names the key path, exactly as the daemon's settings do (both go through
``poold_common.config.load_model``).
"""

from __future__ import annotations

import socket
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agents.metrics import parse_listen
from agents.scrub import PLACEHOLDERS
from poold_common.config import load_model
from poold_wire.messages import NODE_NAME_PATTERN

ENV_PREFIX = "POOLD_AGENT_"


def _placeholders(argv: list[str]) -> list[str]:
    for position, arg in enumerate(argv):
        for _, name, _, _ in string.Formatter().parse(arg):
            if name is not None and name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                raise ValueError(f"argument {position}: unknown placeholder {{{name}}} (known: {known})")
    return argv


ScrubCommand = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1), AfterValidator(_placeholders)]
"""The argv that scrubs one device, with placeholders naming it (``agents.scrub``)."""


def default_node_name() -> str:
    """The host name up to its first dot: what ``hostname -s`` prints."""
    return socket.gethostname().split(".")[0] or "localhost"


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(default="http://127.0.0.1:8470", description="base URL of the poold daemon")
    ca_file: Path | None = Field(default=None, description="CA the daemon's certificate is verified against (https); default the system's")
    join_token: str | None = Field(
        default=None, max_length=200,
        description="an admin's join token (poold token create --role join): used once, to join, while state_dir holds no credential",
    )
    node_name: str = Field(
        default_factory=default_node_name, min_length=1, max_length=200, pattern=NODE_NAME_PATTERN
    )
    state_dir: Path = Field(default=Path("/var/lib/poold-agent"), description="job dirs and queued events")
    machine_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="this machine's id for the daemon; default /etc/machine-id (or one generated in state_dir)",
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="until the daemon names its own interval at registration"
    )
    poll_interval_s: float = Field(default=1.0, gt=0, le=60, description="seconds between assignment polls")
    network: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="the network this node is on (an InfiniBand fabric, a rail, a rack): a job over several nodes keeps to one",
    )
    fake: str | None = Field(default=None, description="fixture name of the mocked-device harness, e.g. a100-4")
    collectors: list[str] | None = Field(default=None, description="collectors to enable; None means all")
    kill_grace_s: float = Field(default=10.0, ge=0, le=3600, description="SIGTERM to SIGKILL, seconds")
    log_chunk_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="bytes per log upload")
    request_timeout_s: float = Field(default=10.0, gt=0, le=300, description="per HTTP request to the daemon")
    retry_max_s: float = Field(default=30.0, gt=0, le=3600, description="cap of the reconnect backoff")
    job_retention_s: float = Field(
        default=7 * 86400, ge=0, description="keep a finished, fully reported job's dir this long"
    )
    metrics_listen: str | None = Field(
        default=None, description="HOST:PORT where the agent serves its devices' metrics for Prometheus (agents.metrics); None: off",
    )
    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")

    # ---- who jobs run as, and what holds them (agents.users, agents.isolation) ----------
    allow_root: bool = Field(default=False, description="whether a job may run as root (uid 0)")
    default_user: str = Field(
        default="nobody", min_length=1, max_length=64, description="Unix user of jobs that name none (when the agent is root)"
    )
    allowed_users: list[str] | None = Field(
        default=None, description="users a job may name; None: any user of the node but root (default_user always)"
    )
    job_groups: list[str] = Field(default_factory=list, description="supplementary groups every job gets (video, render)")
    isolation: Literal["auto", "env"] = Field(
        default="auto", description="auto: a cgroup per job (and device control) where the kernel allows; env: variables only"
    )
    cgroup_parent: str = Field(
        default="poold", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100,
        description="the cgroup (under each hierarchy's root) that holds the jobs' cgroups, job-<id>",
    )
    shared_device_files: list[str] = Field(
        default_factory=list, description="device files (globs) every job may open besides its own devices' and the standard ones"
    )
    scrub: dict[str, ScrubCommand] = Field(
        default_factory=dict,
        description="device class (nvidia, nvidia-mig, amd, huawei, xilinx, intel) -> the command that scrubs one device",
    )
    scrub_timeout_s: float = Field(default=600.0, gt=0, le=86400, description="a scrub that runs longer has failed")

    @field_validator("server_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {url!r}")
        return url.rstrip("/")

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, listen: str | None) -> str | None:
        if listen is not None:
            parse_listen(listen)
        return listen

    @field_validator("default_user")
    @classmethod
    def _root_needs_allow_root(cls, user: str, info: ValidationInfo) -> str:
        if user == "root" and not info.data.get("allow_root"):
            raise ValueError("root needs allow_root = true")
        return user


def load_agent_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> AgentSettings:
    """Defaults, then the TOML file at ``path`` (optional), then ``POOLD_AGENT_*`` from ``env``.

    Raises ``poold_common.config.SettingsError`` naming each bad key and where it came from.
    """
    return load_model(AgentSettings, path, env, prefix=ENV_PREFIX)


def with_overrides(settings: AgentSettings, **overrides: object) -> AgentSettings:
    """``settings`` with the non-None ``overrides`` applied (command-line flags), validated again."""
    data = settings.model_dump()
    data.update({key: value for key, value in overrides.items() if value is not None})
    return AgentSettings.model_validate(data)
