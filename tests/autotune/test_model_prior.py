"""The cost model as a prescreen: measurements to reach a quality in model order, and saved."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from autotune.calibrate import load_records
from autotune.cost_model import calibrated_factors
from autotune.model_prior import (
    evaluations_to_quality,
    main,
    prescreen_rows,
    random_order_expectation,
)

RECORDS = Path(__file__).resolve().parents[2] / "docs/device-reports"
RECORDS_FILE = RECORDS / "2026-11-26-h200-measured_records.jsonl"


def test_a_perfect_model_needs_one_measurement_and_a_reversed_one_needs_all() -> None:
    measured = [3.0, 1.0, 2.0, 4.0]
    assert evaluations_to_quality(measured, measured, 1.0) == 1
    assert evaluations_to_quality([-t for t in measured], measured, 1.0) == 4
    # the model measures 3.0 ms, then 2.0 ms: within quality 0.5 of the best (1.0 ms)
    assert evaluations_to_quality([0.0, 9.0, 1.0, 5.0], measured, 0.5) == 2
    assert evaluations_to_quality([2.0, 0.0, 1.0, 3.0], [4.0, 2.0, 1.9, 5.0], 0.9) == 1


def test_ties_in_the_model_order_count_against_the_model() -> None:
    assert evaluations_to_quality([1.0, 1.0, 1.0], [1.0, 3.0, 2.0], 1.0) == 3


def test_random_order_expectation_is_n_plus_one_over_good_plus_one() -> None:
    assert random_order_expectation([1.0, 2.0, 3.0], 1.0) == pytest.approx(2.0)
    assert random_order_expectation([1.0, 1.02, 3.0, 4.0], 0.95) == pytest.approx(5 / 3)


@pytest.mark.parametrize("quality", [0.0, 1.5])
def test_a_quality_outside_zero_one_is_refused(quality: float) -> None:
    with pytest.raises(ValueError, match="quality"):
        evaluations_to_quality([1.0], [1.0], quality)


def test_rows_count_model_order_per_kernel_on_records_the_model_ranks_exactly() -> None:
    records = load_records([RECORDS_FILE])
    # Times the stored model predicts itself: its order is the measured order.
    exact = [
        dataclasses.replace(r, time_ms=r.model_ms(calibrated_factors(r.arch))) for r in records
    ]
    rows = prescreen_rows(exact, stored=True)
    assert len(rows) == len({r.problem.kernel_key(r.arch) for r in records})
    assert sum(row.candidates for row in rows) == len(records)
    assert all(row.model_order == 1 and row.saved == row.candidates - 1 for row in rows)
    # The slowest-first order is the worst the model can do: it needs every candidate.
    reversed_times = [dataclasses.replace(r, time_ms=1.0 / r.time_ms) for r in exact]
    rows = prescreen_rows(reversed_times, stored=True)
    assert all(row.model_order == row.candidates for row in rows)


def test_the_cli_reports_leave_one_kernel_out_rows_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([str(RECORDS_FILE), "--quality", "0.95", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(row["quality"] == 0.95 for row in rows)
    for row in rows:
        assert 1 <= row["model_order"] <= row["candidates"]
        assert row["saved"] == row["candidates"] - row["model_order"]
        assert row["calibration"] == "other kernels"
