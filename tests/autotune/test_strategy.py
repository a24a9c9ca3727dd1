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
        StrategySettings(
            model="gp",
            initial_design="maximin",
            alignment_feature=True,
            y_cap_quantile=0.5,
            candidate_pool=20,
        ),
        StrategySettings(model="tpe"),
        StrategySettings(model="gp", surrogate="forest"),
        StrategySettings(model="gp", acquisition="ts", initial_design="mixed"),
        StrategySettings(model="gp", acquisition="hedge"),
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
    with pytest.raises(ValueError, match="surrogate='svm'"):
        StrategySettings(surrogate="svm")


def test_the_alignment_feature_marks_powers_of_two_of_mixed_integer_parameters():
    space = SearchSpace(
        params=(("b", (16, 32, 48, 64)), ("w", (1, 2, 4, 8)), ("k", ("a", "z"))),
        violations=lambda p: [],
    )
    points = [(16, 1, "a"), (48, 2, "z"), (64, 8, "a")]
    plain = space.features(points)
    aligned = space.features(points, alignment=True)
    # b mixes powers of two and 48: one more column; w is all powers of two: none added
    assert aligned.shape == (3, plain.shape[1] + 1)
    assert aligned[:, 1].tolist() == [1.0, 0.0, 1.0]


def test_the_maximin_design_spreads_the_first_points_to_the_far_corners():
    space = SearchSpace(
        params=(("x", tuple(range(11))), ("y", tuple(range(11)))), violations=lambda p: []
    )
    settings = StrategySettings(initial_design="maximin", initial_points=4)
    searcher = Searcher(space, seed=3, budget=30, settings=settings)
    first = [searcher.ask() for _ in range(4)]
    for candidate in first:
        searcher.tell(candidate, 1.0)
    x0, y0 = first[0].values
    x1, y1 = first[1].values
    # the second point is as far as the grid allows from the first (L1 over the features)
    assert abs(x1 - x0) + abs(y1 - y0) == max(x0, 10 - x0) + max(y0, 10 - y0)
    assert len({c.values for c in first}) == 4


ALIGNMENT_SPACE = SearchSpace(
    params=(
        ("block", (16, 32, 48, 64, 80, 96, 112, 128)),
        ("tile", (1, 2, 3, 4)),
        ("warps", (1, 2, 4)),  # powers of two only: no alignment to choose
        ("flag", (0, 1)),
    ),
    violations=lambda p: [],
)


def test_aligned_points_have_every_mixed_integer_parameter_at_a_power_of_two():
    points = [(64, 4, 1, 0), (48, 4, 1, 0), (64, 3, 2, 1), (16, 1, 4, 1)]
    assert ALIGNMENT_SPACE.aligned(points).tolist() == [True, False, False, True]
    assert SPACE.aligned(SPACE.valid_points).all()  # nothing mixes: every point is aligned


@pytest.mark.parametrize("seed", range(3))
def test_the_initial_design_starts_among_aligned_points_then_spreads_over_all(seed):
    def first_points(aligned_start: int) -> list[tuple]:
        settings = StrategySettings(initial_points=8, aligned_start=aligned_start)
        searcher = Searcher(ALIGNMENT_SPACE, seed=seed, budget=40, settings=settings)
        seen = []
        for _ in range(8):
            candidate = searcher.ask()
            assert candidate is not None
            seen.append(candidate.values)
            searcher.tell(candidate, 1.0)
        return seen

    assert ALIGNMENT_SPACE.aligned(first_points(8)).all()
    # Without the aligned start, maximin takes unaligned corners too (the alignment column is a
    # feature: 0 for 48 or 3 is as far as a corner gets from the aligned points taken).
    assert not ALIGNMENT_SPACE.aligned(first_points(0)).all()
    assert ALIGNMENT_SPACE.aligned(first_points(5)[:5]).all()


def test_the_candidate_pool_keeps_a_sample_and_every_free_neighbour_of_the_best():
    import numpy as np

    from autotune.proposal import ProposalSettings, Proposer

    grid = np.array([(x, y) for x in range(30) for y in range(30)], dtype=np.float64)
    proposer = Proposer(
        grid / 29,
        grid,
        settings=ProposalSettings(candidate_pool=50),
        rng=np.random.default_rng(0),
    )
    taken = np.zeros(len(grid), dtype=bool)
    rows = [int(np.flatnonzero((grid == (10, 10)).all(1))[0])]
    taken[rows] = True
    candidates = proposer._candidates(rows, np.array([0.0]), taken)
    neighbours = {(10, y) for y in range(30)} | {(x, 10) for x in range(30)}
    neighbours.discard((10, 10))
    chosen = {tuple(int(v) for v in grid[r]) for r in candidates}
    assert neighbours <= chosen and (10, 10) not in chosen
    assert len(chosen) <= 50 + len(neighbours)


def test_the_aligned_pool_scores_unaligned_points_only_as_neighbours_of_the_best():
    import numpy as np

    from autotune.proposal import ProposalSettings, Proposer

    points = ALIGNMENT_SPACE.valid_points
    aligned = ALIGNMENT_SPACE.aligned(points)
    grid = np.array(
        [
            [choices.index(v) for (_, choices), v in zip(ALIGNMENT_SPACE.params, p, strict=True)]
            for p in points
        ],
        dtype=np.float64,
    )
    features = ALIGNMENT_SPACE.features(points, log_numbers=True, alignment=True)
    taken = np.zeros(len(points), dtype=bool)
    best = points.index((64, 2, 2, 1))
    taken[best] = True

    def candidates(aligned_pool: bool) -> set[tuple]:
        proposer = Proposer(
            features,
            grid,
            settings=ProposalSettings(candidate_pool=0, aligned_pool=aligned_pool),
            rng=np.random.default_rng(0),
            aligned=aligned,
        )
        return {points[r] for r in proposer._candidates([best], np.array([0.0]), taken)}

    # one parameter changed, to any choice: the unaligned blocks and the tile of 3
    neighbours = {(b, 2, 2, 1) for b in (48, 80, 96, 112)} | {(64, 3, 2, 1)}
    assert candidates(False) == set(points) - {points[best]}
    restricted = candidates(True)
    assert neighbours <= restricted
    assert {p for p in restricted if not ALIGNMENT_SPACE.aligned([p])[0]} == neighbours
    assert restricted >= {p for p, a in zip(points, aligned, strict=True) if a} - {points[best]}


def test_bad_design_and_cap_settings_are_refused():
    with pytest.raises(ValueError, match="initial_design='sobol'"):
        StrategySettings(initial_design="sobol")
    with pytest.raises(ValueError, match="y_cap_quantile=0"):
        StrategySettings(y_cap_quantile=0)
    with pytest.raises(ValueError, match="aligned_start=-1"):
        StrategySettings(aligned_start=-1)


def test_the_mixed_design_spreads_its_first_half_then_samples_at_random():
    space = SearchSpace(
        params=(("x", tuple(range(11))), ("y", tuple(range(11)))), violations=lambda p: []
    )
    settings = StrategySettings(initial_design="mixed", initial_points=4)

    def first_four(seed: int) -> list[tuple]:
        searcher = Searcher(space, seed=seed, budget=30, settings=settings)
        out = []
        for _ in range(4):
            candidate = searcher.ask()
            searcher.tell(candidate, 1.0)
            out.append(candidate.values)
        return out

    for seed in range(5):
        (x0, y0), (x1, y1), *_ = first_four(seed)
        assert abs(x1 - x0) + abs(y1 - y0) == max(x0, 10 - x0) + max(y0, 10 - y0)
    # the random half is not pinned to corners: over a few seeds some point lies inside
    later = [p for seed in range(5) for p in first_four(seed)[2:]]
    assert any(0 < x < 10 and 0 < y < 10 for x, y in later)


def test_the_latin_design_covers_every_parameters_strata_once():
    space = SearchSpace(
        params=(("x", tuple(range(8))), ("y", tuple(range(8)))), violations=lambda p: []
    )
    for seed in range(4):
        searcher = Searcher(
            space, seed=seed, budget=30, settings=StrategySettings(initial_design="lhs")
        )
        first = []
        for _ in range(4):
            candidate = searcher.ask()
            searcher.tell(candidate, 1.0)
            first.append(candidate.values)
        # the design (8 points over 8 choices) takes every choice of each parameter once
        for _ in range(4):
            candidate = searcher.ask()
            searcher.tell(candidate, 1.0)
            first.append(candidate.values)
        for axis in (0, 1):
            assert sorted(p[axis] for p in first) == list(range(8))


def test_named_candidates_override_the_defaults_and_unknown_names_are_refused():
    from autotune.strategy_settings import PRESETS, preset_settings

    assert preset_settings("gp") == StrategySettings()
    assert preset_settings("gp-forest").surrogate == "forest"
    base = StrategySettings(initial_points=6)
    assert preset_settings("gp-lhs", base).initial_points == 6  # --set values survive
    assert all(preset_settings(name).model == "gp" for name in PRESETS)
    with pytest.raises(ValueError, match="strategy='gp-magic'"):
        preset_settings("gp-magic")


def test_likelihood_restarts_never_end_worse_than_the_warm_fit():
    import numpy as np

    from autotune.surrogate import GaussianProcess

    rng = np.random.default_rng(7)
    x = rng.random((25, 3))
    y = np.sin(5 * x[:, 0]) + x[:, 1]
    y = (y - y.mean()) / y.std()
    gp = GaussianProcess(3, fit_steps=2)
    gp.theta[:3] = math.log(0.05)  # a poor start: the shortest length scales allowed
    gp.fit(x, y)
    before = gp._nll_or_inf(x, y)
    gp.fit_steps = 15  # each restart takes 4 x 15 Adam steps, as in the proposer
    gp.restart(x, y, 3, np.random.default_rng(0))
    after = gp._nll_or_inf(x, y)
    assert after < before
    mean, _ = gp.predict(x)
    assert np.linalg.norm(mean - y) / np.linalg.norm(y) < 0.2


@pytest.mark.parametrize("seed", range(3))
def test_an_unaligned_optimum_is_still_found_through_the_neighbours_of_the_best(seed):
    def cost(values) -> float:  # a bowl whose minimum is at block 48, tile 3: both unaligned
        block, tile, warps, flag = values
        return (
            1.0
            + math.log2(block / 48) ** 2
            + 0.5 * (tile - 3) ** 2
            + math.log2(warps / 2) ** 2
            + flag
        )

    searcher = Searcher(ALIGNMENT_SPACE, seed=seed, budget=30)
    best = math.inf
    for _ in range(30):
        candidate = searcher.ask()
        assert candidate is not None
        best = min(best, cost(candidate.values))
        searcher.tell(candidate, cost(candidate.values))
    # 30 of 192 points; uniform sampling finds the one optimum with probability 30/192
    assert best == pytest.approx(1.0)


def test_every_third_proposal_is_a_neighbour_of_the_best_so_far():
    import numpy as np

    from autotune.proposal import ProposalSettings, Proposer

    grid = np.array([(x, y) for x in range(12) for y in range(12)], dtype=np.float64)
    rng = np.random.default_rng(5)
    rows = [int(r) for r in rng.choice(len(grid), 9, replace=False)]
    times = [1.0 + abs(grid[r][0] - 7) + abs(grid[r][1] - 2) for r in rows]

    def choice(local_every: int, n_rows: int) -> np.ndarray:
        proposer = Proposer(
            grid / 11,
            grid,
            settings=ProposalSettings(local_every=local_every),
            rng=np.random.default_rng(0),
        )
        taken = np.zeros(len(grid), dtype=bool)
        taken[rows[:n_rows]] = True
        return grid[proposer.choose(rows[:n_rows], times[:n_rows], taken)]

    for n_rows in (6, 9):  # multiples of 3: a local step
        incumbent = grid[rows[int(np.argmin(times[:n_rows]))]]
        assert np.abs(choice(3, n_rows) - incumbent).sum() == 1
        # here expected improvement alone goes two steps away: the local step made the choice
        assert np.abs(choice(0, n_rows) - incumbent).sum() == 2
