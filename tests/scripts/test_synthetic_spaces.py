"""scripts/synthetic_spaces.py: seeded held-out CSV spaces that replay reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autotune.recorded import load_space

REPO = Path(__file__).resolve().parents[2]


def _write(out: Path) -> list[Path]:
    cmd = [sys.executable, str(REPO / "scripts" / "synthetic_spaces.py"), str(out), "--seeds", "5"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [Path(line) for line in result.stdout.split()]


def test_spaces_are_seeded_valid_and_replayable(tmp_path: Path) -> None:
    first = _write(tmp_path / "a")
    second = _write(tmp_path / "b")
    assert [p.name for p in first] == ["synthetic_smooth-5.csv", "synthetic_align-5.csv"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()  # same seed, same file
    space = load_space(first[1])
    assert len(space.valid_points) == len(space.times_ms) > 4000
    for bx, by, *_ in space.valid_points:
        assert bx * by <= 1024  # the thread limit is the invalid region
    failed = sum(t is None for t in space.times_ms.values()) / len(space.times_ms)
    assert 0.01 < failed < 0.06  # about 3% fail
    assert space.optimum_ms == 1.0
