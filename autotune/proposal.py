"""The surrogate's proposals over an enumerated valid set: initial design, then the GP's choice.

Pure NumPy on row numbers of the valid set, so the Searcher (Optuna trials, shared studies)
and quick replay experiments share one implementation. What each knob does and why:

- initial design "maximin": each first point is the valid point farthest (L1 over the
  features) from those already taken, ties broken at random, so a small design covers the
  corners and edges of the space, where tile optima often sit, instead of clustering.
- The GP models log times standardised; with `y_cap_quantile` the values above that quantile
  are flattened to it, so the model spends its flexibility on the good region instead of on
  how slow the slow configurations are (on a recorded convolution space the median
  configuration is 30x slower than the optimum).
- `candidate_pool`: scoring every free valid point costs a kernel row per point per step; on
  a large set the acquisition is maximised over a seeded random sample of that size plus
  every free neighbour (one parameter changed, to any of its choices) of the best
  observations, where the next improvement usually is.
- `aligned_pool`: the sample comes from the aligned rows only (every integer parameter that
  mixes powers of two and other sizes at a power of two); an unaligned row is scored only as
  a neighbour of one of the best observations. The GP fits the power-of-two columns with
  short length scales, so it models unaligned rows as a separate, unexplored function whose
  prior mean is the data's: expected improvement then spent 43 of 100 evaluations on them
  in a traced run on the W6600 convolution space, where nearly all are 3x-100x slower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autotune.forest import RandomForest
from autotune.surrogate import (
    GaussianProcess,
    expected_improvement,
    lower_confidence_bound,
    probability_of_improvement,
)

# Observations whose neighbourhoods join the candidate pool.
POOL_NEIGHBOURS_OF_BEST = 5
HEDGE_ARMS = ("ei", "pi", "lcb", "ts")
HEDGE_ETA = 1.0
FOREST_TREES = 16
RESTART_EVERY = 10


@dataclass(frozen=True)
class ProposalSettings:
    """The GP proposal's tunables (a subset of autotune.strategy.StrategySettings)."""

    fit_steps: int = 15
    acquisition: str = "ei"  # "ei", "multi" (EI, PI, LCB in turn), "ts", or "hedge"
    surrogate: str = "gp"  # "gp" (autotune.surrogate), "forest" (autotune.forest) or "both"
    # ("both": the forest on odd steps, the GP on even ones: a portfolio of two models)
    length_prior: bool = False  # gp: MAP with a dimension-scaled length-scale prior
    fit_restarts: int = 0  # gp: every RESTART_EVERY steps, this many random restarts
    local_every: int = 0  # every k-th proposal: best neighbour of the best (0: never)
    y_cap_quantile: float = 1.0  # flatten log times above this quantile (1.0: no cap)
    candidate_pool: int = 0  # score at most this many random free points (0: all)
    aligned_pool: bool = False  # the sample comes from the aligned rows (`aligned` mask)


class Proposer:
    """Chooses rows of an enumerated valid set: a space-filling start, then GP expected
    improvement."""

    def __init__(
        self,
        features: np.ndarray,
        grid: np.ndarray,
        *,
        settings: ProposalSettings,
        rng: np.random.Generator,
        aligned: np.ndarray | None = None,
    ) -> None:
        """features: rows x d in [0, 1]; grid: rows x params, each choice's index; aligned:
        per row, whether it is aligned (autotune.search_space.SearchSpace.aligned)."""
        self.features = features
        self.grid = grid
        self.aligned = np.ones(len(grid), dtype=bool) if aligned is None else aligned
        self.settings = settings
        self.rng = rng
        self.gp = GaussianProcess(
            features.shape[1], fit_steps=4 * settings.fit_steps, length_prior=settings.length_prior
        )
        self.forest: RandomForest | None = None
        if settings.surrogate in ("forest", "both"):
            self.forest = RandomForest(trees=FOREST_TREES, seed=int(rng.integers(2**31)))
        self.hedge_gain = np.zeros(len(HEDGE_ARMS))
        self.hedge_nominees: list[int] = []

    def farthest(self, taken: np.ndarray, among: np.ndarray | None = None) -> int:
        """The free row farthest from every taken one (a random free row if none is taken);
        `among` (a mask over rows) limits the choice, not the rows it is kept away from."""
        free = np.flatnonzero(~taken if among is None else ~taken & among)
        if not taken.any():
            return int(self.rng.choice(free))
        chosen = self.features[taken]
        distance = np.full(len(free), np.inf)
        for row in chosen:  # a few rows: the design is small
            distance = np.minimum(distance, np.abs(self.features[free] - row).sum(axis=1))
        best = np.flatnonzero(distance >= distance.max() - 1e-9)
        return int(free[self.rng.choice(best)])

    def choose(self, rows: Sequence[int], times: Sequence[float | None], taken: np.ndarray) -> int:
        """The free row of highest acquisition under the GP of (log) `times` at `rows`.

        A failed evaluation (None) is modelled as the slowest time measured.
        """
        finite = [t for t in times if t is not None]
        if len(finite) < 2:
            return int(self.rng.choice(np.flatnonzero(~taken)))
        worst = max(finite)
        y = np.log([worst if t is None else t for t in times])
        if self.settings.y_cap_quantile < 1.0:
            y = np.minimum(y, np.quantile(y, self.settings.y_cap_quantile))
        y = (y - y.mean()) / (y.std() + 1e-12)
        use_forest = self.forest is not None and (
            self.settings.surrogate == "forest" or len(rows) % 2 == 1
        )
        if self.forest is not None and use_forest:
            self.forest.fit(self.features[list(rows)], y)
            predict = self.forest.predict
        else:
            self.gp.fit(self.features[list(rows)], y)
            self.gp.fit_steps = self.settings.fit_steps
            if self.settings.fit_restarts and len(rows) % RESTART_EVERY == 0:
                self.gp.restart(self.features[list(rows)], y, self.settings.fit_restarts, self.rng)
            predict = self.gp.predict
        free = self._candidates(rows, y, taken)
        turn = self.settings.acquisition
        if turn == "multi":
            turn = ("ei", "pi", "lcb")[len(rows) % 3]
        every = self.settings.local_every
        if every > 0 and len(rows) % every == 0:
            # A local step: the free neighbours of the best so far, the one expected fastest.
            incumbent = self.grid[rows[int(np.argmin(y))]]
            steps = np.abs(self.grid[free] - incumbent).sum(axis=1)
            near = free[steps == 1]
            if len(near):
                free, turn = near, "mean"
        mean, std = predict(self.features[free])
        if turn == "hedge":
            return self._hedge(free, mean, std, float(y.min()), predict)
        return int(free[int(np.argmax(self._score(turn, mean, std, float(y.min()))))])

    def _score(self, turn: str, mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
        if turn == "mean":
            score = -mean
        elif turn == "pi":
            score = probability_of_improvement(mean, std, best)
        elif turn == "lcb":
            score = lower_confidence_bound(mean, std)
        elif turn == "ts":  # Thompson sampling from each point's marginal
            score = -(mean + std * self.rng.standard_normal(len(mean)))
        else:
            score = expected_improvement(mean, std, best)
        return score + self.rng.random(len(mean)) * 1e-12  # seeded tie-break

    def _hedge(
        self,
        free: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        best: float,
        predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> int:
        """GP-Hedge (Hoffman et al. 2011): each acquisition nominates a point; one nominee is
        taken with probability rising with its arm's gain, the model's (negated) prediction
        at the arm's past nominees."""
        if self.hedge_nominees:
            now, _ = predict(self.features[self.hedge_nominees])
            self.hedge_gain -= now
        nominees = [int(free[int(np.argmax(self._score(a, mean, std, best)))]) for a in HEDGE_ARMS]
        weights = np.exp(HEDGE_ETA * (self.hedge_gain - self.hedge_gain.max()))
        arm = int(self.rng.choice(len(HEDGE_ARMS), p=weights / weights.sum()))
        self.hedge_nominees = nominees
        return nominees[arm]

    def _candidates(self, rows: Sequence[int], y: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """The free rows the acquisition is maximised over: a sample of the free (aligned)
        rows plus every free neighbour of the best observations (aligned or not)."""
        free = np.flatnonzero(~taken)
        sampled = free
        if self.settings.aligned_pool and self.aligned[free].any():
            sampled = free[self.aligned[free]]
        pool = self.settings.candidate_pool
        if len(sampled) == len(free) and (not pool or len(free) <= pool):
            return free
        keep = np.zeros(len(taken), dtype=bool)
        if pool and len(sampled) > pool:
            sampled = self.rng.choice(sampled, pool, replace=False)
        keep[sampled] = True
        for i in np.argsort(y)[:POOL_NEIGHBOURS_OF_BEST]:
            keep |= (self.grid != self.grid[rows[int(i)]]).sum(axis=1) <= 1
        return np.flatnonzero(keep & ~taken)
