"""tune() end to end with the real templates and NVRTC: model objective here, measured on a GPU."""

from __future__ import annotations

import pytest

from autotune.objective import ModelObjective
from autotune.search import tune
from tessera_core.types import AttentionProblem, GemmProblem

ARCH = "sm_90"


@pytest.mark.parametrize(
    "problem",
    [AttentionProblem(1, 2, 128, 128, 64, causal=True), GemmProblem(256, 128, 64)],
    ids=["attention", "gemm"],
)
def test_tune_compiles_real_candidates_and_scores_them_with_the_model(problem):
    result = tune(
        problem,
        arch=ARCH,
        trials=3,
        jobs=2,
        seed=0,
        progress=False,
        objective=ModelObjective(arch=ARCH),
    )
    assert result.objective_kind == "model"
    assert result.trials_run == 3
    ok = [r for r in result.records if r.status == "ok"]
    assert ok and all(r.kind == "model" for r in ok)
    for record in ok:
        assert record.resources is not None and record.resources["registers"] > 0
        assert record.value_ms is not None and record.value_ms > 0
        assert "waves" in record.detail
    assert result.best_time_ms == min(r.value_ms for r in ok if r.value_ms is not None)


@pytest.mark.gpu
def test_tune_measures_on_the_gpu():
    from generator.gpu import probe

    arch = probe().arch
    assert arch is not None
    result = tune(
        AttentionProblem(1, 4, 256, 256, 64), arch=arch, trials=3, jobs=2, seed=0, progress=False
    )
    assert result.objective_kind == "measured"
    assert all(r.kind == "measured" for r in result.records if r.status == "ok")
    assert result.best_time_ms > 0
