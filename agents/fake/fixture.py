"""A loaded fake-node fixture."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.fake.fixture_file import load_fixture_data


@dataclass(frozen=True)
class Fixture:
    """One fake node: its name, the file it came from, and its merged tables.

    ``data`` holds the TOML tables after ``extends`` is applied: ``node``, and where the
    node has them ``nvidia``, ``ascend``, ``xilinx``, ``intel_fpga``, ``amd``, ``faults``.
    """

    name: str
    path: Path
    data: dict[str, Any]

    @property
    def node(self) -> dict[str, Any]:
        return self.data["node"]

    def has(self, section: str) -> bool:
        """Whether the node has devices of a vendor section (``"ascend"``, ``"nvidia"``...)."""
        table = self.data.get(section) or {}
        return any(isinstance(v, list) and v for v in table.values())


def load_fixture(name_or_path: str | os.PathLike[str]) -> Fixture:
    """Load a shipped fixture by name (``"hgx-h100-mig"``) or any fixture file by path."""
    path, data = load_fixture_data(name_or_path)
    return Fixture(name=path.stem, path=path, data=data)
