"""The tune job: cache hits skip the search, winners are stored, ties go to fewer registers."""

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


def _fake_tune(records: list[TrialRecord], calls: list[int]) -> Any:
    def tune(problem: Any, **kwargs: Any) -> TuneResult:
        calls.append(1)
        best = min((r for r in records if r.value_ms is not None), key=lambda r: r.value_ms or 0)
        return TuneResult(
            problem=problem,
            arch=kwargs["arch"],
            objective_kind="model",
            best_config=TileConfig.from_dict(best.config),
            best_time_ms=float(best.value_ms or 0),
            records=tuple(records),
            trials_run=len(records),
            n_valid=len(records),
            n_failed=0,
            n_invalid=0,
            wall_time_s=0.0,
            stopped_by="trials",
            seed=0,
        )

    return tune


def test_ties_go_to_fewer_registers_and_reruns_are_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    valid = get_family("attention").space.valid_configs(PROBLEM, ARCH)
    first, second = valid[0], valid[1]
    records = [
        TrialRecord(
            0, first.to_dict(), "ok", value_ms=1.0, kind="model", resources={"registers": 200}
        ),
        TrialRecord(
            1, second.to_dict(), "ok", value_ms=1.0, kind="model", resources={"registers": 100}
        ),
    ]
    calls: list[int] = []
    monkeypatch.setattr(autotune.search, "tune", _fake_tune(records, calls))
    request = TuneRequest(problem=PROBLEM, arch=ARCH, trials=2, cache_dir=tmp_path)

    result = run(request)
    assert result.config == second.to_dict()  # same time, fewer registers
    assert [row.config for row in result.leaderboard] == [second.to_dict(), first.to_dict()]
    assert not result.cache_hit and calls == [1]

    again = run(request)
    assert again.cache_hit and again.config == second.to_dict() and calls == [1]
    retuned = run(
        TuneRequest(problem=PROBLEM, arch=ARCH, trials=2, cache_dir=tmp_path, retune=True)
    )
    assert not retuned.cache_hit and calls == [1, 1]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [("trials", 0, "trials=0"), ("timeout_s", -1.0, "timeout_s=-1.0"), ("jobs", 0, "jobs=0")],
)
def test_request_rejects_bad_budgets(field: str, value: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TuneRequest(problem=PROBLEM, arch=ARCH, **{field: value})
