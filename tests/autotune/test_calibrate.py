"""Calibration: factors fitted back from records a known perturbed model generated; bad input."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotune.calibrate import (
    Resources,
    fit,
    load_records,
    measured_record,
    spearman,
)
from autotune.cost_model import Factors, estimate
from tessera_core.types import AttentionProblem, GemmProblem, TileConfig

REPO = Path(__file__).resolve().parents[2]
# The "device": the model with four factors perturbed, plus 2% lognormal timing noise.
TRUE = Factors(tensor=1.25, smem=0.8, latency=1.8, overlap=1.3)
RECOVERED_WITHIN = 0.08  # relative error of each perturbed factor after the fit


def _smem(problem, config) -> int:
    from templates.registry import get_family

    return get_family(problem.family).smem_bytes(problem, config)


def synthetic_records(path: Path, arch: str = "sm_90") -> Path:
    """Records spanning tensor-, smem-, latency- and issue-bound configurations."""
    rng = np.random.default_rng(7)
    problems = [
        AttentionProblem(8, 16, 2048, 2048, 64),
        AttentionProblem(4, 16, 2048, 2048, 128, causal=True),
        GemmProblem(4096, 4096, 4096),
    ]
    lines = []
    for problem, (bm, bn, warps, stages, regs) in itertools.product(
        problems, itertools.product((64, 128), (32, 128), (4, 8), (1, 2), (128, 255))
    ):
        if bm % (16 * warps):
            continue
        config = TileConfig(bm, bn, 32, warps, stages)
        resources = Resources(regs, 0, 0, 0)
        smem = _smem(problem, config)
        time_ms = estimate(
            problem, config, resources, dynamic_smem_bytes=smem, arch=arch, factors=TRUE
        ).time_ms * float(np.exp(rng.normal(0.0, 0.02)))
        record = measured_record(
            problem,
            config,
            arch=arch,
            time_ms=time_ms,
            resources=resources,
            dynamic_smem_bytes=smem,
            loop_counts=None,
        )
        lines.append(json.dumps(record))
    path.write_text("# synthetic\n" + "\n".join(lines) + "\n")
    return path


def test_fit_recovers_the_perturbed_factors_and_improves_the_ranking(tmp_path):
    records = load_records([synthetic_records(tmp_path / "r.jsonl")])
    (result,) = fit(records)
    assert result.arch == "sm_90" and result.records == len(records) >= 40
    for name in ("tensor", "smem", "latency", "overlap"):
        assert getattr(result.factors, name) == pytest.approx(
            getattr(TRUE, name), rel=RECOVERED_WITHIN
        ), name
    assert result.after.spearman > result.before.spearman
    assert result.after.spearman > 0.97
    assert result.after.median_abs_log_ratio < 0.03 < result.before.median_abs_log_ratio


def test_cli_reports_and_writes_the_factors_the_model_then_uses(tmp_path, monkeypatch):
    records = synthetic_records(tmp_path / "r.jsonl")
    out = tmp_path / "calibration.json"
    done = subprocess.run(
        [sys.executable, "-m", "autotune.calibrate", str(records), "--write", str(out), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)["fits"]
    assert report["after"]["spearman"] > report["before"]["spearman"]
    stored = json.loads(out.read_text())["sm_90"]["factors"]
    assert stored["tensor"] == pytest.approx(TRUE.tensor, rel=RECOVERED_WITHIN)

    import autotune.cost_model as cost_model
    import tessera_core.hardware as hardware

    monkeypatch.setattr(hardware, "CALIBRATION_PATH", out)
    cost_model.calibrated_factors.cache_clear()
    try:
        assert cost_model.calibrated_factors("sm_90").smem == pytest.approx(stored["smem"])
    finally:
        cost_model.calibrated_factors.cache_clear()


GOOD = {
    "kind": "measured",
    "arch": "sm_90",
    "time_ms": 1.0,
    "problem": {"op": "gemm", "m": 256, "n": 256, "k": 256, "dtype": "fp16"},
    "config": {"block_m": 64, "block_n": 64, "block_k": 32, "num_warps": 4, "num_stages": 2},
    "resources": {
        "registers": 96,
        "static_smem_bytes": 0,
        "spill_store_bytes": 0,
        "spill_load_bytes": 0,
    },
}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json\n", "r.jsonl:1:"),
        (json.dumps({**GOOD, "time_ms": -1}), "time_ms=-1"),
        (json.dumps({**GOOD, "arch": "sm_70"}), "arch='sm_70'"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "config"}), "missing config"),
        (json.dumps({**GOOD, "kind": "model"}), "only 'measured'"),
        (json.dumps(GOOD), "need at least 3"),
        ("\n", "no records"),
    ],
)
def test_bad_record_files_are_one_line_errors_with_exit_2(tmp_path, content, message):
    path = tmp_path / "r.jsonl"
    if content is not None:
        path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "autotune.calibrate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_spearman_is_rank_correlation_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
