"""The machine id an agent reports: its setting, else /etc/machine-id, else one generated once."""

from __future__ import annotations

from pathlib import Path

from agents.identity import machine_id


def test_the_setting_wins_over_the_machine_files(tmp_path: Path) -> None:
    etc = tmp_path / "machine-id"
    etc.write_text("4c4c4544004b3510804cb2c04f4e4b32\n")
    assert machine_id(tmp_path / "state", "node-a-test", sources=[etc]) == "node-a-test"
    assert machine_id(tmp_path / "state", None, sources=[tmp_path / "absent", etc]) == "4c4c4544004b3510804cb2c04f4e4b32"


def test_without_a_machine_file_an_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")  # a fresh image before systemd-machine-id-setup
    first = machine_id(tmp_path / "state", None, sources=[empty, tmp_path / "absent"])
    assert len(first) == 32 and int(first, 16) >= 0
    assert machine_id(tmp_path / "state", None, sources=[]) == first  # read back after a restart
    assert machine_id(tmp_path / "other", None, sources=[]) != first
