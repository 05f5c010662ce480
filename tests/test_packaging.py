"""An installed textsuite (a wheel, not this checkout) carries every file its code reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("apps/", "core/", "workers/", "migrations/", "textsuite/")


@pytest.mark.slow
def test_the_wheel_holds_every_data_file_of_the_packages(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    sources = [name for name in tracked if name.startswith(PACKAGES)]
    for name in [*sources, "pyproject.toml", "README.md"]:  # a copy: the build writes in-tree
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / "src" / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(tmp_path / "src")],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("textsuite-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    data = [name for name in sources if not name.endswith(".py")]
    assert "apps/sentiment/dashboard/static/dashboard.js" in data  # the check sees data files
    assert [name for name in sources if name not in packed] == []
