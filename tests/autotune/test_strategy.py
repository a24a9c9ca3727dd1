"""The shared strategy on a generic space: only new valid points, exhaustive when covered."""

from __future__ import annotations

import math

import pytest

from autotune.strategy import Searcher, SearchSpace, StrategySettings

PARAMS = (("x", (1, 2, 4, 8, 16, 32)), ("y", (1, 2, 4, 8, 16, 32)), ("flag", (0, 1)))


def _violations(p) -> list[str]:
    return ["x*y > 128"] if p["x"] * p["y"] > 128 else []


SPACE = SearchSpace(params=PARAMS, violations=_violations)


def bowl(values) -> float:
    x, y, flag = values
    return abs(x - 8) + abs(y - 4) + flag + 1.0


def drive(searcher: Searcher, evaluations: int) -> list[tuple]:
    seen = []
    for _ in range(evaluations):
        candidate = searcher.ask()
        if candidate is None:
            break
        seen.append(candidate.values)
        searcher.tell(candidate, bowl(candidate.values))
    return seen


def test_only_new_valid_points_are_proposed_and_invalid_ones_are_reported():
    searcher = Searcher(SPACE, seed=1, budget=40)
    assert not searcher.exhaustive
    seen = drive(searcher, 40)
    assert len(seen) == len(set(seen)) == 40
    assert all(not _violations(SPACE.as_dict(v)) for v in seen)
    for rejection in searcher.rejections:
        assert rejection.repeat or rejection.reasons == ("x*y > 128",)


def test_a_budget_covering_the_space_is_exhaustive_then_none():
    n_valid = len(SPACE.valid_points)
    assert n_valid < SPACE.size()
    searcher = Searcher(SPACE, seed=0, budget=n_valid)
    assert searcher.exhaustive
    seen = drive(searcher, n_valid + 5)
    assert sorted(seen) == sorted(SPACE.valid_points)
    assert searcher.ask() is None and searcher.exhausted


def test_exhaustion_without_the_exhaustive_mode_still_ends():
    settings = StrategySettings(exhaustive_when_covered=False)
    searcher = Searcher(SPACE, seed=0, budget=1000, settings=settings)
    seen = drive(searcher, 1000)
    assert len(seen) == len(set(seen)) == len(SPACE.valid_points)
    assert searcher.exhausted and not searcher.budget_reached


def test_the_budget_is_the_study_total():
    searcher = Searcher(SPACE, seed=0, budget=10)
    assert len(drive(searcher, 1000)) == 10
    assert searcher.ask() is None and searcher.budget_reached


def test_seeded_sequences_repeat_and_differ_across_seeds():
    def run(seed):
        return drive(Searcher(SPACE, seed=seed, budget=30), 30)

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_failures_are_told_without_a_value_and_the_search_goes_on():
    searcher = Searcher(SPACE, seed=2, budget=20)
    for i in range(20):
        candidate = searcher.ask()
        assert candidate is not None
        searcher.tell(candidate, None if i % 2 else bowl(candidate.values), "compile error")
    failed = [t for t in searcher.study.trials if t.user_attrs.get("failure")]
    assert len(failed) == 10


def test_features_are_ordered_positions_or_log_values_and_constants_drop():
    space = SearchSpace(
        params=(("b", (16, 32, 48, 64)), ("c", (7,)), ("k", ("a", "z"))), violations=lambda p: []
    )
    points = [(16, 7, "a"), (48, 7, "z"), (64, 7, "a")]
    index = space.features(points)
    assert index.shape == (3, 2)
    assert index[:, 0].tolist() == [0.0, 2 / 3, 1.0] and index[:, 1].tolist() == [0.0, 1.0, 0.0]
    log = space.features(points, log_numbers=True)
    assert log[1, 0] == pytest.approx((math.log(48) - math.log(16)) / (math.log(64) - math.log(16)))
    assert log[:, 1].tolist() == [0.0, 1.0, 0.0]  # strings stay positions


@pytest.mark.parametrize(
    "settings",
    [
        StrategySettings(model="gp", acquisition="multi", log_features=True),
        StrategySettings(model="gp", local_every=2),
        StrategySettings(model="tpe"),
    ],
)
def test_every_model_finds_the_bowls_minimum_without_repeats(settings):
    searcher = Searcher(SPACE, seed=4, budget=30, settings=settings)
    seen = drive(searcher, 30)
    assert len(seen) == len(set(seen)) == 30
    assert (8, 4, 0) in seen


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="model='bo'"):
        StrategySettings(model="bo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="acquisition='ucb'"):
        StrategySettings(acquisition="ucb")
