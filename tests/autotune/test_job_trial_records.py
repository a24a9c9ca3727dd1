"""A tune job hands back its search's trial records (for the report's best-so-far plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import autotune.search
from autotune.job import TuneRequest, run
from autotune.search import TrialRecord, TuneResult
from templates.registry import get_family
from tessera_core.types import AttentionProblem, TileConfig

PROBLEM = AttentionProblem(1, 1, 64, 64, 64)
ARCH = "sm_80"


def test_tuning_returns_the_trial_records_and_a_hit_returns_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = get_family("attention").space.valid_configs(PROBLEM, ARCH)[0]
    records = (
        TrialRecord(0, config.to_dict(), "ok", value_ms=2.0, kind="model"),
        TrialRecord(1, config.to_dict(), "spill", reason="spills 8 bytes"),
    )

    def tune(problem: Any, **kwargs: Any) -> TuneResult:
        return TuneResult(
            problem=problem,
            arch=kwargs["arch"],
            objective_kind="model",
            best_config=TileConfig.from_dict(config.to_dict()),
            best_time_ms=2.0,
            records=records,
            trials_run=2,
            n_valid=1,
            n_failed=1,
            n_invalid=0,
            wall_time_s=0.0,
            stopped_by="trials",
            seed=0,
        )

    monkeypatch.setattr(autotune.search, "tune", tune)
    request = TuneRequest(problem=PROBLEM, arch=ARCH, trials=2, cache_dir=tmp_path)
    tuned = run(request)
    assert tuned.records == records
    assert "records" not in tuned.to_json_dict()
    assert run(request).records == ()  # a cache hit: the entry keeps no trials
