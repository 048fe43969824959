"""The repository stands on its own: a fresh clone with nothing beside it passes the quick tier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fresh_clone_alone_passes_the_quick_tier(tmp_path: Path) -> None:
    clone = tmp_path / "ofa-vl"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    assert [p.name for p in tmp_path.iterdir()] == ["ofa-vl"]  # no ../shared, nothing else
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}  # the clone's code, not this checkout's
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "not slow",
            "-x",
            "-p",
            "no:cacheprovider",
        ],  # pyproject addopts adds -q
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
