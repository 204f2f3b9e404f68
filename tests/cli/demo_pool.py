"""What the CLI's tests on a live demo pool share (the pool itself: tests/cli/conftest.py)."""

from __future__ import annotations

import subprocess
import sys

SLEEPER = 'name = "sleeper"\ncommand = "sleep 120"\n[resources]\nkind = "gpu"\n[[resources.accept]]\nmodel = "L4"\n'


def poold(env, *args, check: int | None = 0, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``poold ARGS`` as a command of its own; its exit status must be ``check`` (None: any)."""
    result = subprocess.run([sys.executable, "-m", "poold", *args], capture_output=True, text=True, timeout=120, env={**env, **(extra or {})})
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def write(tmp_path, text: str, name: str = "job.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)
