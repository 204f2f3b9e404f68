"""The shipped files (migrations, default configs, systemd units, example jobs): found through
``poold.shipped`` in this checkout, and carried inside a built wheel, which migrates a store
on its own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from poold.shipped import shipped_files, shipped_path

ROOT = Path(__file__).resolve().parents[1]
# Named here so that a glob which matched nothing cannot pass for a complete wheel.
MUST_SHIP = [
    "migrations/env.py",
    "migrations/script.py.mako",
    "config/poold.toml",
    "config/agent.toml",
    "config/systemd/poold.service",
    "config/systemd/poold-agent.service",
    "config/examples/llm-finetune.toml",
]
# What a wheel build must not copy from the source tree.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "*.db")
# pip's words when the build requirements (setuptools, wheel) cannot be downloaded.
OFFLINE = ("No matching distribution found", "Could not find a version that satisfies", "Failed to establish a new connection")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of this checkout (pip builds in the tree it is given)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    shutil.copytree(ROOT, tree, symlinks=True, ignore=NOT_SOURCE)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0 and any(words in result.stderr for words in OFFLINE):
        pytest.skip(f"cannot build a wheel here: pip cannot fetch the build requirements ({result.stderr.strip().splitlines()[-1]})")
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = (tmp / "dist").glob("poold-*.whl")
    return built


@pytest.mark.parametrize("name", MUST_SHIP)
def test_the_checkout_finds_each_shipped_file(name):
    assert shipped_path(*name.split("/")).read_bytes() == (ROOT / name).read_bytes()


def test_a_missing_shipped_file_is_one_line_naming_it():
    with pytest.raises(FileNotFoundError, match=r"^config/nope\.toml is missing from this poold installation \(looked at .*\): reinstall poold$"):
        shipped_path("config", "nope.toml")


def test_the_checkout_ships_all_of_config_and_migrations():
    in_tree = {path.relative_to(ROOT).as_posix() for folder in ("config", "migrations") for path in (ROOT / folder).rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert set(MUST_SHIP) <= in_tree
    assert shipped_files() == sorted(in_tree)


def poold(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poold", *args], capture_output=True, timeout=60)


def test_poold_shipped_lists_and_prints_the_shipped_files():
    listed = poold("shipped")
    assert listed.returncode == 0 and set(MUST_SHIP) <= set(listed.stdout.decode().splitlines())
    unit = poold("shipped", "config/systemd/poold.service")
    assert unit.returncode == 0 and unit.stdout == (ROOT / "config" / "systemd" / "poold.service").read_bytes()
    outside = poold("shipped", "../pyproject.toml")
    assert (outside.returncode, outside.stdout) == (1, b"")
    assert outside.stderr.decode() == "error: no shipped file '../pyproject.toml'; `poold shipped` lists them\n"


def test_the_install_steps_name_shipped_files():
    """README.md and docs/ tell operators to `poold shipped NAME > /etc/...`: each NAME exists."""
    named = {name for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
             for name in re.findall(r"poold shipped ([\w-]+/[\w./-]+)", path.read_text())}
    assert {"config/poold.toml", "config/agent.toml", "config/systemd/poold.service"} <= named
    assert named <= set(shipped_files())


def test_the_wheel_carries_every_file_of_config_and_migrations(wheel):
    expected = set(shipped_files())
    assert set(MUST_SHIP) <= expected
    assert sum(name.startswith("config/examples/") for name in expected) >= 6
    assert sum(name.startswith("migrations/versions/") for name in expected) >= 7
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name.removeprefix("poold/_data/") for name in archive.namelist() if name.startswith("poold/_data/")}
        assert shipped == expected  # nothing missing, and no bytecode or stray file
        for name in expected:
            assert archive.read(f"poold/_data/{name}") == (ROOT / name).read_bytes(), name


def test_the_unpacked_wheel_migrates_a_store_from_anywhere(wheel, tmp_path):
    """The wheel's code, first on the path and run from outside the checkout, finds its own
    migrations: no file of the source tree is needed."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_")}
    env |= {"PYTHONPATH": str(site), "POOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}", "POOLD_STATE_DIR": str(tmp_path)}
    where = subprocess.run([sys.executable, "-c", "from poold.shipped import shipped_path; print(shipped_path('migrations'))"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(site / "poold" / "_data" / "migrations"), where.stderr
    upgrade = subprocess.run([sys.executable, "-m", "poold", "db", "upgrade"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.startswith("schema at revision "), upgrade.stdout


def test_the_wheel_carries_the_dashboard(wheel):
    """The page, script and style sheet the daemon serves at / (poold/api/routes/dashboard.py)."""
    folder = ROOT / "poold" / "api" / "dashboard"
    files = sorted(path.name for path in folder.iterdir())
    assert files == ["app.js", "index.html", "style.css"]
    with zipfile.ZipFile(wheel) as archive:
        for name in files:
            assert archive.read(f"poold/api/dashboard/{name}") == (folder / name).read_bytes(), name
