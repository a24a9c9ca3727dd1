"""Smoke and end-to-end tests of `python -m generator.tune` in real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator.tune", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_help_explains_the_options() -> None:
    result = _tune("--help")
    assert result.returncode == 0
    for option in ("--shape", "--trials", "--timeout", "--jobs", "--seed", "--retune", "--json"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--shape", "8x16x2048"), "BxHxSxD"),
        (("--shape", "8xAx2048x64"), "BxHxSxD"),
        (("--op", "gemm", "--shape", "1x2"), "MxNxK"),
        (("--shape", "8x16x2048x64", "--trials", "0"), "--trials"),
        (("--shape", "8x16x2048x64", "--arch", "sm_70"), "--arch"),
    ],
)
def test_malformed_arguments_exit_2_with_one_line(args: tuple[str, ...], needle: str) -> None:
    result = _tune(*args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_tune_stores_a_kernel_that_load_specialized_returns_then_hits(tmp_path: Path) -> None:
    cache_dir = tmp_path / "kernels"
    args = ("--shape", "1x2x100x64", "--causal", "--arch", "sm_80", "--trials", "3", "--jobs", "2")
    first = _tune(*args, "--cache-dir", str(cache_dir), "--json")
    assert first.returncode == 0, first.stderr
    tuned = json.loads(first.stdout)
    assert tuned["cache_hit"] is False
    assert tuned["objective_kind"] == "model"  # no GPU here: never passed off as measured
    assert tuned["trials_run"] == 3
    assert tuned["kernel_key"] == "attention_fwd.fp16.b1.h2.sq100.skv100.d64.causal.sm_80"

    from runtime import load_specialized

    kernel = load_specialized(tuned["kernel_key"], cache_dirs=[cache_dir])
    assert kernel.config.to_dict() == tuned["config"]
    assert kernel.cubin[:4] == b"\x7fELF"
    assert kernel.metadata["objective"]["kind"] == "model"

    second = _tune(*args, "--cache-dir", str(cache_dir), "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["cache_hit"] is True
    assert again["config"] == tuned["config"]
    assert again["time_ms"] == tuned["time_ms"]

    table = _tune(*args, "--cache-dir", str(cache_dir))
    assert table.returncode == 0
    assert "cache hit" in table.stdout and "model" in table.stdout


def test_gemm_tune_prints_the_best_configurations_labelled_model(tmp_path: Path) -> None:
    result = _tune(
        "--op",
        "gemm",
        "--shape",
        "67x45x93",
        "--arch",
        "sm_90",
        "--trials",
        "2",
        "--cache-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "gemm.fp16.m67.n45.k93.sm_90" in result.stdout
    assert "times are model" in result.stdout


def test_no_valid_configuration_exits_3_and_lists_the_reasons(tmp_path: Path) -> None:
    result = _tune("--shape", "1x1x64x256", "--cache-dir", str(tmp_path))
    assert result.returncode == 3
    assert "no valid tile configuration" in result.stderr
    assert "head_dim=256 must be a multiple of 16 and at most 128" in result.stderr
    assert not any(tmp_path.rglob("*.kernel")), "nothing may be cached for a failed tune"
