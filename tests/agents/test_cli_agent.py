"""``poold-agent``: the inventory it would report, and errors as one line naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.cli import cli
from agents.inventory import Inventory


def fixtures_or_skip(name: str) -> None:
    try:
        from agents.fake import fixture_names
    except ImportError as exc:
        pytest.skip(f"the mocked-device harness (agents.fake) is not available: {exc}")
    if name not in fixture_names():
        pytest.skip(f"fixture {name} is not shipped (have {fixture_names()})")


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=True)


def test_inventory_json_of_a_mig_node() -> None:
    fixtures_or_skip("hgx-h100-mig")
    result = invoke("inventory", "--fake", "hgx-h100-mig", "--json")
    assert result.exit_code == 0, result.output
    inventory = Inventory.model_validate(json.loads(result.stdout))
    gpus = [d for d in inventory.devices if d.uuid.startswith("GPU-")]
    slices = [d for d in inventory.devices if d.uuid.startswith("MIG-")]
    assert len(gpus) == 8 and {d.model for d in gpus} == {"H100"}
    assert slices and all(s.parent_uuid in {g.uuid for g in gpus} for s in slices)
    assert inventory.collectors["nvidia"] == "ok"


def test_inventory_table_for_people() -> None:
    fixtures_or_skip("l4-2")
    result = invoke("inventory", "--fake", "l4-2", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stdout.count("nvidia gpu L4 #") == 2
    assert "collector nvidia: ok" in result.stdout


LAB_FIXTURE = """
[node]
hostname = "[bold]lab[/] :thumbs_up:"
cpu_cores = 8
memory_mib = 65536

[xilinx]
xrt_version = "2.16.204"

[xilinx.defaults]
vbnv = "xilinx_u250_gen3x16_xdma_shell_4_1"
logic_uuid = "0xd8a3b4a2e1c34f0f9bd5ed3c2a1a4b7e"
is_ready = true

[[xilinx.devices]]
bdf = "0000:ab:00.0"

[[xilinx.devices]]
bdf = "0000:ac:00.1"
is_ready = false
"""


def test_inventory_table_prints_what_the_node_reports_as_written(tmp_path: Path) -> None:
    """Markup in a hostname and the emoji code :ab: in a bus id are not read as such."""
    fixtures_or_skip("alveo-u250-2")  # the harness, with its fake xbutil
    fixture = tmp_path / "lab.toml"
    fixture.write_text(LAB_FIXTURE)
    result = invoke("inventory", "--fake", str(fixture))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[bold]lab[/] :thumbs_up:: 8 CPU cores")
    assert "│ 0000:ab:00.0 │" in result.stdout and "\N{NEGATIVE SQUARED AB}" not in result.stdout
    assert "unhealthy: XRT reports the card not ready" in result.stdout


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("heartbeat_interval_s = -1\n", {}, "agent.toml: heartbeat_interval_s: Input should be greater than 0"),
        ("serverurl = 'http://x'\n", {}, "agent.toml: serverurl: unknown key"),
        ("", {"POOLD_AGENT_POLL_INTERVAL_S": "fast"}, "$POOLD_AGENT_POLL_INTERVAL_S: poll_interval_s: Input should be a valid number"),
        ("server_url = 'pool:8470'\n", {}, "agent.toml: server_url: must start with http:// or https://, got 'pool:8470'"),
        ("default_user = 'root'\n", {}, "agent.toml: default_user: root needs allow_root = true"),
        ("[scrub]\nnvidia = ['nvidia-smi', '-r', '-i', '{uid}']\n", {},
         "agent.toml: scrub.nvidia: argument 3: unknown placeholder {uid} (known: {uuid}, {index}, {bus_id}, {parent_uuid}, {vendor}, {kind}, {job_id})"),
        ("", {"POOLD_AGENT_SCRUB__AMD": "[]"}, "$POOLD_AGENT_SCRUB__AMD: scrub.amd: List should have at least 1 item"),
        ("isolation = 'cgroups'\n", {}, "agent.toml: isolation: Input should be 'auto' or 'env'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, toml: str, env: dict[str, str], expected: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml)
    result = invoke("run", "--config", str(config), env=env)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: invalid config: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_missing_config_file_and_bad_flags(tmp_path: Path) -> None:
    result = invoke("run", "--config", str(tmp_path / "nope.toml"))
    assert (result.exit_code, result.stderr.strip()) == (1, f"Error: config file {tmp_path / 'nope.toml'} does not exist")
    result = invoke("run", "--node", "bad name!")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: invalid option: node_name: String should match pattern")


def test_unusable_state_dir_is_one_line(tmp_path: Path) -> None:
    fixtures_or_skip("l4-2")
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("run", "--fake", "l4-2", "--state-dir", str(blocker / "state"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: cannot use state dir {blocker / 'state'}: Not a directory"


def test_unknown_fixture_is_one_line() -> None:
    fixtures_or_skip("l4-2")
    result = invoke("inventory", "--fake", "no-such-fixture")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no-such-fixture" in result.stderr


def test_the_shipped_config_loads_and_documents_every_key() -> None:
    from agents.config import AgentSettings, load_agent_settings

    shipped = Path(__file__).resolve().parents[2] / "config" / "agent.toml"
    assert load_agent_settings(shipped, env={}).model_dump(exclude={"node_name"}) == \
        AgentSettings().model_dump(exclude={"node_name"})  # the values shown are the defaults
    text = shipped.read_text()
    assert [key for key in AgentSettings.model_fields if f"{key} =" not in text and f"[{key}]" not in text] == []
