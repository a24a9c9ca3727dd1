"""scripts/fa2_grid_sample.py: which FA2 grid cells a sample keeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import fa2_grid_sample

        yield fa2_grid_sample
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_larger_pairs_are_sampled_more_sparsely_and_the_scale_multiplies(sample) -> None:
    small = "test_fa2_forward_full[dtype=fp16-d=64-seq=113x203-causal=0]"
    medium = "test_fa2_forward_full[dtype=fp16-d=64-seq=1024x1023-causal=0]"
    large = "test_fa2_forward_full[dtype=fp16-d=64-seq=2048x2048-causal=0]"
    assert sample.every(small) < sample.every(medium) < sample.every(large)
    assert sample.every(small, scale=2.0) == 2 * sample.every(small)
    assert sample.every(small, scale=0.01) == 1


def test_the_same_scale_keeps_the_same_cells(sample) -> None:
    ids = [
        f"test_fa2_forward_full[d={d}-seq=113x203-causal={c}]" for d in range(300) for c in (0, 1)
    ]
    first = [i for i in ids if sample.kept(i)]
    assert first == [i for i in ids if sample.kept(i)]
    assert 0 < len(first) < len(ids) // 10
    assert all(sample.kept(i, scale=0.01) for i in ids)


def test_the_plugin_deselects_the_slow_grid_down_to_a_sample() -> None:
    command = [
        sys.executable, "-m", "pytest", "tests/runtime/test_fa2_grid.py", "-m", "slow",
        "--collect-only", "-q", "-p", "no:randomly", "-p", "fa2_grid_sample",
        "--fa2-grid-scale", "4",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "scripts")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    collected, total = (int(x) for x in summary.split()[0].split("/"))
    assert 0 < collected < total // 50, summary
