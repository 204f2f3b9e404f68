"""The job file (``job.toml``): its typed model, and parsing with errors that name key and line.

See ``docs/jobs.md`` for the format. Sizes accept integers (MiB) or strings with a unit
("40GiB", "512MiB", "1.5TiB"); durations accept seconds or strings ("90s", "30m", "2h").
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

_SIZE_UNITS_MIB = {"": 1, "m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024**2, "tb": 1024**2, "tib": 1024**2}
_DURATION_UNITS_S = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _parse_size_mib(value: Any) -> Any:
    """'40GiB' -> 40960; plain numbers are MiB. Other types are left for pydantic to reject."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if not match or unit not in _SIZE_UNITS_MIB:
            raise ValueError(f"not a size: {value!r} (use MiB as a number, or e.g. '40GiB', '512MiB')")
        return int(float(match.group(1)) * _SIZE_UNITS_MIB[unit])
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


SizeMiB = Annotated[int, BeforeValidator(_parse_size_mib), Field(ge=0)]
DurationS = Annotated[float, BeforeValidator(_parse_duration_s), Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AcceptedModel(_Strict):
    """One entry of the ordered accept list: a chip model and the job's relative speed on it."""

    model: str = Field(min_length=1, description="chip model as the pool names it: H100, A100, L4, 910B, U250")
    speed: float = Field(default=1.0, gt=0, description="relative work per hour on this model (higher is faster)")


class Resources(_Strict):
    count: int = Field(default=1, ge=1, le=64, description="number of devices")
    kind: Literal["gpu", "npu", "fpga", "any"] = "gpu"
    memory_per_device: SizeMiB | None = Field(default=None, description="minimum device memory, MiB")
    share: float | None = Field(default=None, gt=0, le=1, description="fraction of one device (count must be 1)")
    cpu_cores: float = Field(default=0, ge=0)
    host_memory: SizeMiB = Field(default=0, description="host memory, MiB")
    mig_profile: str | None = Field(default=None, pattern=r"^[1-7]g\.[0-9]+gb$", description="e.g. 1g.10gb")
    compute_capability: str | None = Field(default=None, pattern=r"^[0-9]+\.[0-9]+$", description="minimum, e.g. 8.0")
    fpga_shell: str | None = Field(default=None, min_length=1, description="exact shell / PR interface id")
    same_node: bool = True
    interconnect: Literal["any", "nvlink"] = "any"
    accept: list[AcceptedModel] = Field(default_factory=list, description="ordered chip models with speeds")
    objective: Literal["cost", "time", "pack"] = "cost"
    max_price_per_hour: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "Resources":
        if self.share is not None and self.share < 1 and self.count != 1:
            raise ValueError("share below 1 needs count = 1 (a fraction of one device)")
        if self.mig_profile is not None and (self.count != 1 or self.kind not in ("gpu", "any")):
            raise ValueError("mig_profile needs kind = 'gpu' and count = 1 (CUDA sees one MIG slice per process)")
        if self.mig_profile is not None and self.share is not None and self.share < 1:
            raise ValueError("mig_profile and share cannot be combined: a MIG slice is taken whole")
        if self.fpga_shell is not None and self.kind not in ("fpga", "any"):
            raise ValueError("fpga_shell needs kind = 'fpga'")
        if not self.same_node and self.count > 1:
            raise ValueError("same_node = false (jobs spread over several nodes) is not supported yet")
        models = [entry.model.lower() for entry in self.accept]
        if len(models) != len(set(models)):
            raise ValueError("accept lists a model twice")
        return self

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
    command: list[str] = Field(min_length=1, description="argv; a string in the file is split like a shell")
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    queue: str = "default"
    priority: int = Field(default=0, ge=-1000, le=1000)
    user: str | None = Field(default=None, description="run as this user (the agent must be root)")
    max_runtime: DurationS | None = Field(default=None, description="seconds; the agent kills the job after it")
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="before")
    @classmethod
    def _split_command(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("command"), str):
            try:
                data = {**data, "command": shlex.split(data["command"])}
            except ValueError as exc:
                raise ValueError(f"command: {exc}") from exc
        return data

    @model_validator(mode="after")
    def _env_names(self) -> "JobSpec":
        for key in self.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"env: {key!r} is not a valid variable name")
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
    """Parse and validate a job file; raise :class:`JobFileError` naming each bad key and its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(source, [f"not valid TOML: {exc}"]) from exc
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        lines = key_lines(text)
        problems = []
        for error in exc.errors():
            path = _error_path(error["loc"])
            line = _line_for(lines, path)
            where = f"line {line}: " if line else ""
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            elif error["type"] == "missing":
                message = "required key is missing"
            problems.append(f"{where}{'.'.join(path) or '(file)'}: {message}")
        raise JobFileError(source, problems) from exc


def _error_path(loc: tuple[Any, ...]) -> list[str]:
    # Pydantic puts the validator's name in loc for some wrapped types; keep keys and indexes.
    return [str(part) for part in loc if not (isinstance(part, str) and ("[" in part or part.startswith("function-")))]


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in a TOML text to the line (1-based) where it is written.

    Handles tables, arrays of tables (``[[resources.accept]]`` entries get their index)
    and dotted keys; inline tables map to the line of their key. Good enough to point a
    person at the mistake, which is all it is for.
    """
    result: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            name = tuple(_split_key(line[2 : line.find("]]")]))
            index = array_counts.get(name, -1) + 1
            array_counts[name] = index
            table = (*name, str(index))
            result.setdefault(name, number)
            result[table] = number
            continue
        if line.startswith("["):
            table = tuple(_split_key(line[1 : line.find("]")]))
            result.setdefault(table, number)
            continue
        if "=" in line:
            key = tuple(_split_key(line.split("=", 1)[0]))
            for depth in range(1, len(key) + 1):
                result.setdefault((*table, *key[:depth]), number)
    return result


def _split_key(key: str) -> list[str]:
    return [part.strip().strip('"').strip("'") for part in key.split(".") if part.strip()]


def _line_for(lines: dict[tuple[str, ...], int], path: list[str]) -> int | None:
    for depth in range(len(path), 0, -1):
        if tuple(path[:depth]) in lines:
            return lines[tuple(path[:depth])]
    return None
