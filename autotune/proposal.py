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
  every free neighbour (one parameter one choice away) of the best observations, where the
  next improvement usually is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autotune.surrogate import (
    GaussianProcess,
    expected_improvement,
    lower_confidence_bound,
    probability_of_improvement,
)

# Observations whose neighbourhoods join the candidate pool.
POOL_NEIGHBOURS_OF_BEST = 5


@dataclass(frozen=True)
class ProposalSettings:
    """The GP proposal's tunables (a subset of autotune.strategy.StrategySettings)."""

    fit_steps: int = 15
    acquisition: str = "ei"  # "ei", or "multi" (EI, PI and LCB in turn)
    local_every: int = 0  # every k-th proposal: best neighbour of the best (0: never)
    y_cap_quantile: float = 1.0  # flatten log times above this quantile (1.0: no cap)
    candidate_pool: int = 0  # score at most this many random free points (0: all)


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
    ) -> None:
        """features: rows x d in [0, 1]; grid: rows x params, each choice's index."""
        self.features = features
        self.grid = grid
        self.settings = settings
        self.rng = rng
        self.gp = GaussianProcess(features.shape[1], fit_steps=4 * settings.fit_steps)

    def farthest(self, taken: np.ndarray) -> int:
        """The free row farthest from every taken one (a random free row if none is taken)."""
        free = np.flatnonzero(~taken)
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
        self.gp.fit(self.features[list(rows)], y)
        self.gp.fit_steps = self.settings.fit_steps
        free = self._candidates(rows, y, taken)
        turn = "ei"
        if self.settings.acquisition == "multi":
            turn = ("ei", "pi", "lcb")[len(rows) % 3]
        every = self.settings.local_every
        if every > 0 and len(rows) % every == 0:
            # A local step: the free neighbours of the best so far, the one expected fastest.
            incumbent = self.grid[rows[int(np.argmin(y))]]
            steps = np.abs(self.grid[free] - incumbent).sum(axis=1)
            near = free[steps == 1]
            if len(near):
                free, turn = near, "mean"
        mean, std = self.gp.predict(self.features[free])
        if turn == "mean":
            score = -mean
        elif turn == "pi":
            score = probability_of_improvement(mean, std, float(y.min()))
        elif turn == "lcb":
            score = lower_confidence_bound(mean, std)
        else:
            score = expected_improvement(mean, std, float(y.min()))
        score = score + self.rng.random(len(free)) * 1e-12  # seeded tie-break
        return int(free[int(np.argmax(score))])

    def _candidates(self, rows: Sequence[int], y: np.ndarray, taken: np.ndarray) -> np.ndarray:
        free = np.flatnonzero(~taken)
        pool = self.settings.candidate_pool
        if not pool or len(free) <= pool:
            return free
        keep = np.zeros(len(taken), dtype=bool)
        keep[self.rng.choice(free, pool, replace=False)] = True
        for i in np.argsort(y)[:POOL_NEIGHBOURS_OF_BEST]:
            keep |= (self.grid != self.grid[rows[int(i)]]).sum(axis=1) <= 1
        return np.flatnonzero(keep & ~taken)
