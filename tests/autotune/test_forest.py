"""The random-forest surrogate: fits steps a GP would smooth, spreads where the data is thin."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.forest import STD_FLOOR, RandomForest


def test_a_step_is_cut_where_it_is():
    rng = np.random.default_rng(0)
    x = rng.random((60, 3))
    y = np.where(x[:, 1] < 0.3, 5.0, 0.0)  # a cliff along one feature, flat elsewhere
    forest = RandomForest(trees=24, seed=1)
    forest.fit(x, y)
    probe = rng.random((400, 3))
    mean, std = forest.predict(probe)
    truth = np.where(probe[:, 1] < 0.3, 5.0, 0.0)
    far_from_cliff = np.abs(probe[:, 1] - 0.3) > 0.1
    error = np.linalg.norm(mean[far_from_cliff] - truth[far_from_cliff])
    # random cut points blur the cliff a little (extra trees), but every side is told apart
    assert error / np.linalg.norm(truth[far_from_cliff]) < 0.25
    assert ((mean[far_from_cliff] > 2.5) == (truth[far_from_cliff] > 2.5)).all()
    assert std.min() >= STD_FLOOR


def test_the_spread_grows_away_from_the_observations():
    x = np.linspace(0.0, 0.5, 30)[:, None]  # nothing observed above 0.5
    y = np.sin(12 * x[:, 0])
    forest = RandomForest(trees=32, seed=2)
    forest.fit(x, y)
    _, std_inside = forest.predict(np.linspace(0.05, 0.45, 20)[:, None])
    mean_at_data, _ = forest.predict(x)
    assert np.linalg.norm(mean_at_data - y) / np.linalg.norm(y) < 0.35
    assert std_inside.mean() < 1.0


def test_fits_are_seeded_and_repeat():
    rng = np.random.default_rng(3)
    x, y = rng.random((40, 4)), rng.standard_normal(40)
    probe = rng.random((50, 4))
    first, second, other = RandomForest(seed=5), RandomForest(seed=5), RandomForest(seed=6)
    for forest in (first, second, other):
        forest.fit(x, y)
    assert np.array_equal(first.predict(probe)[0], second.predict(probe)[0])
    assert not np.array_equal(first.predict(probe)[0], other.predict(probe)[0])


def test_predict_before_fit_names_the_fix():
    with pytest.raises(ValueError, match=r"call fit\(x, y\) first"):
        RandomForest().predict(np.zeros((1, 2)))
