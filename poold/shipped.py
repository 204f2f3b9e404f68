"""The files poold ships beside its code: the migrations, the default config, the systemd
units and the example jobs.

They live at the repository root (``migrations/``, ``config/``). ``poold/_data`` holds links
to those two folders, and ``pyproject.toml`` names the files behind them as package data,
so a wheel carries copies inside the package while a source checkout or an editable
install reads them through the links. Either way the code finds them here, and only here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_path(*parts: str) -> Path:
    """The shipped file or folder at ``parts`` below ``_data``, e.g. ``("config", "poold.toml")``.

    Raises FileNotFoundError (one line, naming what is missing) when the installation lacks it.
    """
    path = Path(str(files("poold").joinpath("_data", *parts)))
    if not path.exists():
        raise FileNotFoundError(f"{'/'.join(parts)} is missing from this poold installation (looked at {path}): reinstall poold")
    return path


def shipped_files() -> list[str]:
    """The names of every shipped file, such as ``config/systemd/poold.service``, sorted."""
    root = shipped_path()
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.glob("*/**/*")  # the links below _data are followed, unlike with rglob
        if path.is_file() and "__pycache__" not in path.parts
    )
