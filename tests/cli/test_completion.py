"""Shell completion against a live daemon: job ids and node names come from it, and nothing
(quickly, quietly) when it cannot be reached or no token is set. Driven as a shell drives it:
``_POOLD_COMPLETE=bash_complete COMP_WORDS=... COMP_CWORD=... poold``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.builders import make_node
from tests.live import LiveDaemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    live = LiveDaemon(tmp_path_factory.mktemp("daemon"), extra_env={"POOLD_NODES__TIMEOUT_S": "3600"})  # no heartbeats come
    try:
        for builder in (make_node("a100").gpus(4, "A100"), make_node("l4").gpus(2, "L4")):
            body = {"node": builder.name, "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices]}
            live.http.post("/api/v1/agents/register", json=body).raise_for_status()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def job_ids(daemon):
    spec = {"name": "train", "command": ["true"], "resources": {"kind": "gpu"}}
    with daemon.client() as client:
        return [client.submit(dict(spec, name=f"train-{i}"))["id"] for i in range(12)]


def complete(env: dict[str, str], line: str, shell: str = "bash") -> list[str]:
    """What ``poold`` offers for the last word of ``line`` (empty when it ends with a space)."""
    words = line.split(" ")
    result = subprocess.run([sys.executable, "-m", "poold"], capture_output=True, text=True, timeout=60,
                            env={**env, "_POOLD_COMPLETE": f"{shell}_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if shell == "bash":  # "type,value" per line
        return [item.split(",", 1)[1] for item in result.stdout.splitlines() if item]
    return result.stdout.splitlines()  # zsh: type, value, help per item


def test_job_ids_complete_from_the_daemon(daemon, job_ids):
    assert sorted(map(int, complete(daemon.cli_env, "poold job "))) == sorted(job_ids)
    ones = complete(daemon.cli_env, "poold cancel 1")
    assert ones and sorted(ones) == sorted(str(i) for i in job_ids if str(i).startswith("1"))
    assert complete(daemon.cli_env, "poold why 1") == ones and complete(daemon.cli_env, "poold logs 1") == ones
    zsh = complete(daemon.cli_env, "poold job 1", shell="zsh")  # zsh shows each value's help: the job's name and state
    assert zsh[zsh.index(ones[0]) + 1].startswith(f"train-{job_ids.index(int(ones[0]))} (")


def test_node_names_complete_from_the_daemon(daemon):
    assert complete(daemon.cli_env, "poold drain ") == ["a100", "l4"]
    assert complete(daemon.cli_env, "poold undrain l") == ["l4"]
    assert complete(daemon.cli_env, "poold devices --node a") == ["a100"]


def test_the_url_before_the_command_is_the_one_asked(daemon):
    env = {key: value for key, value in daemon.cli_env.items() if key != "POOLD_URL"}
    assert complete(env, f"poold --url {daemon.url} drain ") == ["a100", "l4"]


def test_nothing_is_offered_without_a_daemon_or_a_token(daemon):
    started = time.monotonic()
    assert complete({**daemon.cli_env, "POOLD_URL": "http://127.0.0.1:9"}, "poold job ") == []
    env = {key: value for key, value in daemon.cli_env.items() if key != "POOLD_TOKEN"}
    assert complete({**env, "XDG_CONFIG_HOME": "/nonexistent"}, "poold drain ") == []
    assert time.monotonic() - started < 30
    assert complete(daemon.cli_env, "poold dr") == ["drain"]  # commands complete without the daemon's help


def test_the_documented_scripts_are_printed(daemon):
    for shell, marker in (("bash", "complete -o nosort -F _poold_completion poold"), ("zsh", "#compdef poold"), ("fish", "complete --no-files --command poold")):
        result = subprocess.run([sys.executable, "-m", "poold"], capture_output=True, text=True, timeout=60,
                                env={**daemon.cli_env, "_POOLD_COMPLETE": f"{shell}_source"})
        assert result.returncode == 0 and marker in result.stdout, (shell, result.stdout)
