"""The job file (``job.toml``): its typed model, and parsing with errors that name key and line.

See ``docs/jobs.md`` for the format. Sizes accept integers (MiB) or strings with a unit
("40GiB", "512MiB", "1.5TiB"); durations accept seconds or strings ("90s", "30m", "2h").
"""

from __future__ import annotations

import json
import math
import re
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from poold.toml_lines import BARE_KEY as _BARE_KEY
from poold.toml_lines import key_lines
from poold_wire.bounds import Text

_SIZE_UNITS_MIB = {"": 1, "m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024**2, "tb": 1024**2, "tib": 1024**2}
_DURATION_UNITS_S = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
# 1 PiB in MiB: far above any device or host, and keeps sizes inside a 64-bit database column.
_MAX_SIZE_MIB = 1024**3
# A job lost with its node runs once more by default, as Slurm requeues batch jobs after a
# node failure (JobRequeue=1) and a Kubernetes Job makes a new pod; ``retries = 0`` is for
# jobs that must never run twice. The cap bounds a job that keeps taking its nodes down.
DEFAULT_RETRIES = 1
MAX_RETRIES = 10
# A preempted job gets SIGTERM, then this long before SIGKILL unless its job file says
# otherwise; the daemon cuts it to scheduler.preempt_grace_max_s when it preempts.
DEFAULT_GRACE_PERIOD_S = 30.0
# Nodes one gang may span (resources.nodes).
MAX_NODES = 512


def _parse_size_mib(value: Any) -> Any:
    """'40GiB' -> 40960; plain numbers are MiB. Other types are left for pydantic to reject."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if not match or unit not in _SIZE_UNITS_MIB:
            raise ValueError(f"not a size: {value!r} (use MiB as a number, or e.g. '40GiB', '512MiB')")
        mib = float(match.group(1)) * _SIZE_UNITS_MIB[unit]
        if not math.isfinite(mib) or mib > _MAX_SIZE_MIB:
            raise ValueError(f"size too large: {value!r} (at most 1 PiB)")
        return int(mib)
    return value


def _parse_duration_s(value: Any) -> Any:
    """'2h' -> 7200.0; plain numbers are seconds."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if not match or unit not in _DURATION_UNITS_S:
            raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. '90s', '30m', '2h')")
        return float(match.group(1)) * _DURATION_UNITS_S[unit]
    return value


SizeMiB = Annotated[int, BeforeValidator(_parse_size_mib), Field(ge=0, le=_MAX_SIZE_MIB)]
DurationS = Annotated[float, BeforeValidator(_parse_duration_s), Field(gt=0)]


class _Strict(BaseModel):
    # No inf/nan: a job's numbers end up in JSON (the API, the store), which has neither.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _KeyProblem(ValueError):
    """A check across keys, raised with the key path (relative to the model) it should be reported at."""

    def __init__(self, key: tuple[str, ...], message: str):
        super().__init__(message)
        self.key = key


class AcceptedModel(_Strict):
    """One entry of the ordered accept list: a chip model and the job's relative speed on it."""

    model: Text = Field(min_length=1, max_length=80, description="chip model as the pool names it: H100, A100, L4, 910B, U250")
    speed: float = Field(default=1.0, gt=0, description="relative work per hour on this model (higher is faster)")
    after: DurationS | None = Field(
        default=None, description="seconds the job waits for the models before this one until this model is acceptable too"
    )


# Keys that only mean something for jobs that take devices (refused on CPU-only jobs).
DEVICE_KEYS = ("memory_per_device", "share", "mig_profile", "compute_capability", "fpga_shell", "accept")


class Resources(_Strict):
    count: int = Field(
        default=1, ge=0, le=64,
        description="number of devices (per node with nodes; in all with same_node = false); 0 asks for CPU cores and host memory only",
    )
    nodes: int | None = Field(
        default=None, ge=1, le=MAX_NODES, description="a gang over this many nodes, count devices on each (Slurm's --nodes)"
    )
    kind: Literal["gpu", "npu", "fpga", "any", "cpu"] = Field(default="gpu", description='"cpu" is the same as count = 0')
    memory_per_device: SizeMiB | None = Field(default=None, description="minimum device memory, MiB")
    share: float | None = Field(default=None, gt=0, le=1, description="fraction of one device (count must be 1)")
    cpu_cores: float = Field(default=0, ge=0)
    host_memory: SizeMiB = Field(default=0, description="host memory, MiB")
    mig_profile: str | None = Field(default=None, pattern=r"^[1-7]g\.[0-9]+gb$", description="e.g. 1g.10gb")
    compute_capability: str | None = Field(default=None, pattern=r"^[0-9]+\.[0-9]+$", description="minimum, e.g. 8.0")
    fpga_shell: Text | None = Field(default=None, min_length=1, max_length=1024, description="exact shell / PR interface id")
    same_node: bool = Field(default=True, description="false: count may be split over several nodes (see docs/jobs.md, Gangs)")
    interconnect: Literal["any", "nvlink"] = "any"
    accept: list[AcceptedModel] = Field(default_factory=list, description="ordered chip models with speeds")
    objective: Literal["cost", "time", "pack"] = "cost"
    max_price_per_hour: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _cpu_kind_means_no_devices(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "cpu":
            if data.get("count", 0) != 0:
                raise _KeyProblem(("count",), 'kind = "cpu" takes no devices: leave count out or set it to 0')
            data = {**data, "count": 0}
        return data

    @property
    def cpu_only(self) -> bool:
        """The job asks for CPU cores and host memory only (``count = 0`` or ``kind = "cpu"``)."""
        return self.count == 0

    @model_validator(mode="after")
    def _consistent(self) -> "Resources":
        if self.count == 0:
            for key in DEVICE_KEYS:
                if getattr(self, key):
                    raise _KeyProblem((key,), f"{key} needs devices, but the job takes none (count = 0 or kind = \"cpu\")")
            if self.interconnect != "any":
                raise _KeyProblem(("interconnect",), "interconnect needs devices, but the job takes none (count = 0 or kind = \"cpu\")")
            if self.nodes is not None:
                raise _KeyProblem(("nodes",), "nodes needs devices on each node, but the job takes none (count = 0 or kind = \"cpu\")")
            self.kind = "cpu"
            return self
        if self.share is not None and self.share < 1 and self.count != 1:
            raise _KeyProblem(("share",), "share below 1 needs count = 1 (a fraction of one device)")
        if self.mig_profile is not None and (self.count != 1 or self.kind not in ("gpu", "any")):
            raise _KeyProblem(
                ("mig_profile",), "mig_profile needs kind = 'gpu' and count = 1 (CUDA sees one MIG slice per process)"
            )
        if self.mig_profile is not None and self.share is not None and self.share < 1:
            raise _KeyProblem(("mig_profile",), "mig_profile and share cannot be combined: a MIG slice is taken whole")
        if self.fpga_shell is not None and self.kind not in ("fpga", "any"):
            raise _KeyProblem(("fpga_shell",), "fpga_shell needs kind = 'fpga'")
        self._gang_consistent()
        seen: set[str] = set()
        for index, entry in enumerate(self.accept):
            if entry.model.lower() in seen:
                raise _KeyProblem(("accept", str(index), "model"), f"accept lists model {entry.model!r} twice")
            seen.add(entry.model.lower())
        if self.accept and self.accept[0].after is not None:
            # The first choice is what the job waits for: there is nothing before it to wait on.
            raise _KeyProblem(("accept", "0", "after"), "the first accept entry is always acceptable: after needs an entry before it to wait for")
        return self

    def _gang_consistent(self) -> None:
        """``nodes`` and ``same_node = false`` make gangs over several nodes: whole devices only."""
        if self.nodes is not None and "same_node" in self.model_fields_set:
            raise _KeyProblem(
                ("same_node",), "same_node cannot be combined with nodes: nodes = N already places count devices on each of N nodes"
            )
        if self.multi_node:
            key = "nodes" if self.nodes is not None else "same_node"
            if self.share is not None and self.share < 1:
                raise _KeyProblem(("share",), f"share below 1 cannot be combined with {key}: the parts of a gang take whole devices")
            if self.mig_profile is not None:
                raise _KeyProblem(("mig_profile",), f"mig_profile cannot be combined with {key}: the parts of a gang take whole devices")

    @property
    def multi_node(self) -> bool:
        """The job may span several nodes (a gang): ``nodes`` above 1, or ``same_node = false``
        with more than one device."""
        return (self.nodes or 1) > 1 or (not self.same_node and self.count > 1)

    def speed_on(self, model: str) -> float | None:
        """The job's relative speed on ``model``; ``None`` when the accept list excludes it."""
        if not self.accept:
            return 1.0
        for entry in self.accept:
            if entry.model.lower() == model.lower():
                return entry.speed
        return None


class JobSpec(_Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    command: list[Text] = Field(min_length=1, description="argv; a string in the file is split like a shell")
    env: dict[str, Text] = Field(default_factory=dict)
    workdir: Text | None = None
    queue: Text = Field(default="default", max_length=100)
    priority: int = Field(default=0, ge=-1000, le=1000)
    user: Text | None = Field(default=None, description="run as this user (the agent must be root)")
    max_runtime: DurationS | None = Field(default=None, description="seconds; the agent kills the job after it")
    retries: int = Field(
        default=DEFAULT_RETRIES, ge=0, le=MAX_RETRIES,
        description="times the job is submitted again when its node is lost while it is placed there",
    )
    resources: Resources = Field(default_factory=Resources)
    preemptible: bool = Field(
        default=True, description="false: not stopped to make room for another queue's job while its queue is within its guarantee"
    )
    grace_period: Annotated[float, BeforeValidator(_parse_duration_s), Field(ge=0, le=86400)] = Field(
        default=DEFAULT_GRACE_PERIOD_S, description="seconds between SIGTERM and SIGKILL when it is preempted (capped by the daemon)"
    )

    @model_validator(mode="before")
    @classmethod
    def _split_command(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("command"), str):
            try:
                data = {**data, "command": shlex.split(data["command"])}
            except ValueError as exc:
                raise _KeyProblem(("command",), f"cannot split the command like a shell: {exc}") from exc
        return data

    @model_validator(mode="after")
    def _env_names(self) -> "JobSpec":
        for key in self.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise _KeyProblem(("env", key), f"{key!r} is not a valid variable name (letters, digits, _)")
        return self


class JobFileError(ValueError):
    """A job file that cannot be used; ``problems`` holds one line per mistake."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


def parse_job_file(path: str | Path) -> JobSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobFileError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    return parse_job_text(text, source=str(path))


def parse_job_text(text: str, source: str = "job.toml") -> JobSpec:
    """Parse and validate a job file; raise :class:`JobFileError` naming each bad key and its line.

    Each problem reads ``line N: key.path: message``; a missing key has no line, and a TOML
    syntax error names the line and column tomllib reports.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(source, [_toml_problem(exc, text)]) from exc
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        lines = key_lines(text)
        located: list[tuple[int | None, str]] = []
        for error in exc.errors():
            path = error_path(error)
            line = _line_for(lines, path)
            where = f"line {line}: " if line else ""
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            elif error["type"] == "missing":
                message = "required key is missing"
            located.append((line, f"{where}{_key_path(path)}: {message}"))
        # In the order of the file, then the missing keys, which have no line.
        located.sort(key=lambda item: (item[0] is None, item[0] or 0))
        raise JobFileError(source, [problem for _, problem in located]) from exc


def _toml_problem(exc: tomllib.TOMLDecodeError, text: str) -> str:
    # tomllib (3.11) only has the position inside its message: "Invalid value (at line 3, column 9)".
    match = re.fullmatch(r"(.*) \(at line ([0-9]+), column ([0-9]+)\)", str(exc), re.DOTALL)
    if match:
        return f"line {match.group(2)}: not valid TOML: {match.group(1)} (column {match.group(3)})"
    match = re.fullmatch(r"(.*) \(at end of document\)", str(exc), re.DOTALL)
    if match:
        last_line = text.rstrip("\n").count("\n") + 1  # TOML lines end at "\n" only
        return f"line {last_line}: not valid TOML: {match.group(1)} (at the end of the file)"
    return f"not valid TOML: {exc}"


def error_path(error: Any) -> list[str]:
    """The key path of one pydantic error (an ``ErrorDetails``), as strings: a check across keys
    names the key it blames, and wrapped validators' names ("function-before[...]") are dropped."""
    path = [str(part) for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _KeyProblem):
        path += cause.key
    return path


def _key_path(path: list[str]) -> str:
    """``resources.accept.1.model``; keys that are not bare TOML keys are quoted: ``env."MY VAR"``."""
    parts = [part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False) for part in path]
    return ".".join(parts) or "(file)"


def _line_for(lines: dict[tuple[str, ...], int], path: list[str]) -> int | None:
    for depth in range(len(path), 0, -1):
        if tuple(path[:depth]) in lines:
            return lines[tuple(path[:depth])]
    return None
