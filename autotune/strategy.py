"""The search strategy shared by tune() and replay: seeded Optuna TPE mapped onto valid configs.

Why this design (each choice measured with `python -m autotune.replay`, 50 seeds, on the two
recorded GPU spaces at 25 and 100 evaluations; numbers in the replay module's docstring):

- Validity is known before compiling (the space's constraints), so an invalid configuration is
  never spent as an evaluation: the sampler's invalid proposal is closed as FAIL and replaced
  by the nearest valid configuration not yet proposed (index distance over the ordered
  choices). A proposal that repeats an evaluated configuration is replaced the same way, so no
  configuration is evaluated twice. Telling invalid proposals to TPE as the worst value
  instead (so it "learns validity") scored lower: its bad group fills with invalid points.
- A failed evaluation (compile error, spill, over-limit resources, wrong result) is told as
  the worst value with the reason in the trial's user attrs, so TPE steers away from where
  candidates fail; closing it as FAIL instead scored lower on the convolution space
  (0.764 vs 0.781 at 25 evaluations, 0.908 vs 0.926 at 100).
- The first evaluations (20% of the budget, 4 to 12) are uniform over the *valid* set, not
  the cartesian product (78% of the GEMM space is invalid); then multivariate TPE, which models
  the joint effect of tile sizes, warps and stages (they interact through registers and
  shared memory); its constant liar keeps a batch of `jobs` pending candidates apart.
  Univariate TPE, more EI candidates, shorter or longer start-ups and interleaved local steps
  around the best were all tried and were no better.
- When the budget covers every valid configuration the search is exhaustive in a seeded order:
  a model cannot beat measuring everything.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import Trial, TrialState

# What an invalid proposal or a failed evaluation is told as: worse than any real time, so TPE
# ranks it in its "bad" group (TPE uses ranks, not magnitudes).
PENALTY_VALUE = 1e30

Values = tuple[Any, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Named parameters with ordered choices and a validity rule: whatever a strategy searches."""

    params: tuple[tuple[str, tuple[Any, ...]], ...]
    violations: Callable[[Mapping[str, Any]], list[str]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)

    def size(self) -> int:
        return int(np.prod([len(choices) for _, choices in self.params]))

    def as_dict(self, values: Values) -> dict[str, Any]:
        return dict(zip(self.names, values, strict=True))

    def points(self) -> Iterator[Values]:
        """Every point of the cartesian product, valid or not, in a stable order."""
        return itertools.product(*(choices for _, choices in self.params))

    @functools.cached_property
    def valid_points(self) -> list[Values]:
        """Every valid point in a stable (cartesian) order (computed once)."""
        return [values for values in self.points() if not self.violations(self.as_dict(values))]


@dataclass(frozen=True)
class StrategySettings:
    """The tunables of the strategy itself, chosen with replay (autotune.replay)."""

    startup_fraction: float = 0.2  # uniform valid samples before TPE, as a fraction of budget...
    min_startup: int = 4  # ...but at least this many
    max_startup: int = 12  # ...and at most this many
    multivariate: bool = True
    n_ei_candidates: int = 24
    penalize_invalid: bool = False  # tell invalid proposals as the worst value, else as FAIL
    penalize_failures: bool = True  # tell failed evaluations as the worst value, else as FAIL
    exhaustive_when_covered: bool = True

    def startup(self, budget: int) -> int:
        return max(self.min_startup, min(self.max_startup, round(self.startup_fraction * budget)))


@dataclass
class Candidate:
    """One configuration the strategy wants evaluated; tell its outcome back."""

    number: int  # the Optuna trial number
    values: Values
    params: dict[str, Any]
    trial: Trial


@dataclass(frozen=True)
class Rejection:
    """A proposal that was not evaluated: invalid (with reasons) or a repeat."""

    number: int  # the Optuna trial number
    params: dict[str, Any]
    reasons: tuple[str, ...]
    repeat: bool


@dataclass
class Searcher:
    """Proposes new valid configurations of `space`, learning from the values it is told."""

    space: SearchSpace
    seed: int
    budget: int
    settings: StrategySettings = field(default_factory=StrategySettings)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._valid = self.space.valid_points
        self._index = {
            name: {choice: i for i, choice in enumerate(choices)}
            for name, choices in self.space.params
        }
        spans = [max(1, len(choices) - 1) for _, choices in self.space.params]
        self._scale = np.asarray(spans, dtype=np.float64)
        self._valid_idx = np.asarray(
            [self._indices(v) for v in self._valid], dtype=np.float64
        ).reshape(len(self._valid), len(self.space.params))
        self._row = {values: i for i, values in enumerate(self._valid)}
        self._taken = np.zeros(len(self._valid), dtype=bool)
        self._asked = 0
        self.rejections: list[Rejection] = []
        self.exhaustive = self.settings.exhaustive_when_covered and len(self._valid) <= self.budget
        self._order = list(self._rng.permutation(len(self._valid)))
        self._startup = self.settings.startup(self.budget)
        self._distributions: dict[str, BaseDistribution] = {
            name: CategoricalDistribution(list(choices)) for name, choices in self.space.params
        }
        # Optuna logs every trial at INFO on stderr, which would bury the progress bar; this
        # is process-wide (Optuna has no per-study switch).
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=self.seed,
                multivariate=self.settings.multivariate,
                n_startup_trials=self._startup,
                n_ei_candidates=self.settings.n_ei_candidates,
                constant_liar=True,
            )
        self.study = optuna.create_study(direction="minimize", sampler=sampler)

    @property
    def n_valid(self) -> int:
        return len(self._valid)

    @property
    def exhausted(self) -> bool:
        return bool(self._taken.all())

    def _indices(self, values: Values) -> list[int]:
        return [self._index[name][v] for name, v in zip(self.space.names, values, strict=True)]

    def _take(self, row: int) -> Candidate:
        self._taken[row] = True
        values = self._valid[row]
        params = self.space.as_dict(values)
        self.study.enqueue_trial(params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask(self._distributions)
        self._asked += 1
        return Candidate(trial.number, values, params, trial)

    def _nearest_free(self, values: Values) -> int:
        target = np.asarray(self._indices(values), dtype=np.float64)
        distance = np.abs(self._valid_idx - target) / self._scale
        score = distance.sum(axis=1) + self._rng.random(len(self._valid)) * 1e-6
        score[self._taken] = np.inf
        return int(np.argmin(score))

    def ask(self) -> Candidate | None:
        """The next configuration to evaluate, never invalid nor a repeat; None when exhausted."""
        if self.exhausted:
            return None
        if self.exhaustive or self._asked < self._startup:
            row = next(r for r in self._order if not self._taken[r])
            return self._take(row)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask(self._distributions)
        values = tuple(trial.params[name] for name in self.space.names)
        row = self._row.get(values)
        if row is not None and not self._taken[row]:
            self._taken[row] = True
            self._asked += 1
            return Candidate(trial.number, values, dict(trial.params), trial)
        if row is None:
            reasons = tuple(self.space.violations(trial.params))
            trial.set_user_attr("invalid", list(reasons))
            if self.settings.penalize_invalid:
                self.study.tell(trial, PENALTY_VALUE)
            else:
                self.study.tell(trial, state=TrialState.FAIL)
        else:
            reasons = ("repeats a configuration already proposed",)
            self.study.tell(trial, state=TrialState.FAIL)
        self.rejections.append(
            Rejection(trial.number, dict(trial.params), reasons, row is not None)
        )
        return self._take(self._nearest_free(values))

    def tell(self, candidate: Candidate, value: float | None, reason: str | None = None) -> None:
        """Report a candidate's value (lower is better) or its failure (value None + reason)."""
        if value is None:
            candidate.trial.set_user_attr("failure", reason or "failed")
            if self.settings.penalize_failures:
                self.study.tell(candidate.trial, PENALTY_VALUE)
            else:
                self.study.tell(candidate.trial, state=TrialState.FAIL)
        else:
            self.study.tell(candidate.trial, value)
