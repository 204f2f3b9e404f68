"""Settings built from a TOML file and prefixed environment variables, with errors that name
each bad key and where it came from. The daemon's ``poold.settings`` and the agent's
``agents.config`` both load their one typed settings object through :func:`load_model`.

A variable names a key path with ``__`` between levels (``POOLD_SCHEDULER__INTERVAL_S``);
values are parsed as TOML values when they can be (numbers, booleans, arrays) and taken as
strings otherwise.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError


class SettingsError(ValueError):
    """A config that cannot be used; the message names each bad key."""


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def load_model(
    model: type[SettingsT],
    path: str | Path | None,
    env: dict[str, str] | None,
    prefix: str,
) -> SettingsT:
    """Build ``model`` from a TOML file (optional) and ``prefix``-ed variables of ``env``
    (``None``: the process environment)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    overrides = env_overrides(os.environ if env is None else env, prefix)
    for keys, value in overrides:
        _set_path(data, keys, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            origin = _origin(key, overrides, prefix) or source
            problems.append(f"{origin}: {key}: {message}")
        raise SettingsError("invalid config:\n  " + "\n  ".join(problems)) from exc



def env_overrides(environ: Any, prefix: str) -> list[tuple[list[str], Any]]:
    overrides = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(prefix) or name == prefix:
            continue
        keys = [part.lower() for part in name[len(prefix) :].split("__")]
        # Model names in [prices] keep their case as users write them (H100, 910B).
        if len(keys) == 2 and keys[0] == "prices":
            keys[1] = name[len(prefix) :].split("__")[1]
        overrides.append((keys, _env_value(raw)))
    return overrides


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = data.get(key)
        if not isinstance(child, dict):
            child = data[key] = {}
        data = child
    data[keys[-1]] = value


def _origin(key: str, overrides: list[tuple[list[str], Any]], prefix: str) -> str | None:
    for keys, _ in overrides:
        if ".".join(keys).lower() == key.lower() or key.lower().startswith(".".join(keys).lower() + "."):
            return "$" + prefix + "__".join(part.upper() for part in keys)
    return None
