"""The search strategy shared by tune() and replay: a surrogate over the enumerated valid set.

Why this design (measured with `python -m autotune.replay` on the recorded GPU spaces at 25
and 100 evaluations; every table is in docs/search-candidates.md):

- Validity is known before compiling (the space's constraints) and the valid set is small
  enough to enumerate, so the strategy only ever proposes new valid configurations: nothing
  is spent on an invalid point or a repeat.
- The default model ("gp") is a Gaussian process on each parameter's log value (ordered
  numbers, not categories; 16, 32, 64 evenly spaced) plus a power-of-two column for integer
  parameters that mix aligned and unaligned sizes, with expected improvement scored on the
  unevaluated valid points (a seeded sample of 2,000 plus every neighbour of the best five on
  large sets; autotune.proposal, autotune.surrogate). It replaced multivariate TPE over
  categorical choices ("tpe", still selectable), which treats 64 as no nearer to 48 than to
  256.
- Aligned first: the initial design is a maximin design (each point the farthest from those
  taken) over the aligned configurations, where every such mixed parameter is at a power of
  two, and the acquisition's sample is drawn from them too; an unaligned configuration is
  scored only as a neighbour of one of the best five. On the three recorded convolution GPUs
  every configuration within 15% of the optimum is aligned. A kernel whose optimum is
  unaligned still reaches it through the neighbours.
- Every third proposal is local: the free neighbour (one parameter one choice away) of the
  best so far that the GP expects fastest. With the aligned start and pool this lifted the
  replay at 25 / 100 evaluations (20 seeds) from 0.719 / 0.948 to 0.917 / 0.999 (A4000),
  0.847 / 0.925 to 0.866 / 0.970 (W6600), 0.773 / 0.950 to 0.893 / 0.972 (W7800), and GEMM
  from 0.903 / 0.979 to 0.881 / 0.981, every shared space at 0.85 / 0.95 or above.
  Every candidate measured on the way is tabled in docs/search-candidates.md; those that are
  settings stay selectable by name (autotune.strategy_settings.PRESETS).
- Or the first evaluations are the best of a prior ranking: a warm start from another GPU's
  measurements of the same kernel.
- A failed evaluation (compile error, spill, over-limit resources, wrong result) is told as
  the worst value with the reason in the trial's user attrs; the model sees it as the slowest
  time measured so far, so it steers away from where candidates fail.
- When the budget covers every valid configuration the search is exhaustive in a seeded order:
  a model cannot beat measuring everything.
- Every proposal is an Optuna trial of `study`, which may live in a shared storage (sqlite,
  journal file, PostgreSQL): the configurations already taken, the observations and the
  budget are read from the study, so any number of workers can share one search
  (autotune.study).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from autotune.proposal import ProposalSettings, Proposer
from autotune.search_space import SearchSpace as SearchSpace
from autotune.search_space import Values as Values
from autotune.strategy_settings import MODELS as MODELS
from autotune.strategy_settings import Model as Model
from autotune.strategy_settings import StrategySettings as StrategySettings

# What a failed evaluation is told as: worse than any real time, so TPE ranks it in its "bad"
# group (TPE uses ranks, not magnitudes); the GP reads it as the slowest time measured.
PENALTY_VALUE = 1e30
log = logging.getLogger(__name__)


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


class _ProposalSampler(optuna.samplers.BaseSampler):
    """Returns the configuration the searcher chose (`fixed`), else asks the wrapped sampler."""

    def __init__(self, base: optuna.samplers.BaseSampler | None) -> None:
        self.base = base or optuna.samplers.RandomSampler()
        self.fixed: dict[str, Any] | None = None

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self.fixed is not None:
            return {}
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self.fixed is not None:
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if self.fixed is not None:
            return self.fixed[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base.after_trial(study, trial, state, values)


# User attrs of trials that were opened but not evaluated: they hold no configuration.
NOT_EVALUATED = ("duplicate_of", "over_budget", "invalid", "repeat")


def spent(trial: FrozenTrial) -> bool:
    """Whether a trial counts against the budget: evaluated, or being evaluated."""
    live = trial.state in (TrialState.COMPLETE, TrialState.RUNNING)
    return live and not any(key in trial.user_attrs for key in NOT_EVALUATED)


@dataclass
class Searcher:
    """Proposes new valid configurations of `space`, learning from the values it is told.

    `study` (default: a new in-memory one) may be shared with other workers through an Optuna
    storage: the budget is the study's total and what any worker took is never proposed again.
    `prior` ranks configurations best first (measured on another GPU): the first proposals are
    its best valid ones instead of uniform samples.
    """

    space: SearchSpace
    seed: int
    budget: int
    settings: StrategySettings = field(default_factory=StrategySettings)
    study: optuna.Study | None = None
    prior: Sequence[Values] = ()
    # Held from reading the shared study's claims to writing this worker's own (see
    # autotune.study.claim_lock); without it two workers could claim one configuration.
    claim_lock: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext

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
        self._features = self.space.features(
            self._valid,
            log_numbers=self.settings.log_features,
            alignment=self.settings.alignment_feature,
        )
        self._aligned = self.space.aligned(self._valid)
        self._row = {values: i for i, values in enumerate(self._valid)}
        self._taken = np.zeros(len(self._valid), dtype=bool)
        self._observed: dict[int, float | None] = {}
        self.rejections: list[Rejection] = []
        self.budget_reached = False
        self.exhaustive = self.settings.exhaustive_when_covered and len(self._valid) <= self.budget
        self._order = list(self._rng.permutation(len(self._valid)))
        self._latin = np.zeros((0, len(self.space.params)))
        if self.settings.initial_design == "lhs":
            self._latin = self._latin_targets(self.settings.initial_points)
        self._prior_rows = [self._row[v] for v in self.prior if v in self._row]
        self._startup = self.settings.startup(self.budget)
        self._proposer = Proposer(
            self._features,
            self._valid_idx,
            settings=ProposalSettings(
                fit_steps=self.settings.gp_fit_steps,
                acquisition=self.settings.acquisition,
                surrogate=self.settings.surrogate,
                length_prior=self.settings.length_prior,
                fit_restarts=self.settings.fit_restarts,
                local_every=self.settings.local_every,
                y_cap_quantile=self.settings.y_cap_quantile,
                candidate_pool=self.settings.candidate_pool,
                aligned_pool=self.settings.aligned_pool,
            ),
            rng=self._rng,
            aligned=self._aligned,
        )
        self._distributions: dict[str, BaseDistribution] = {
            name: CategoricalDistribution(list(choices)) for name, choices in self.space.params
        }
        # Optuna logs every trial at INFO on stderr, which would bury the progress bar; this
        # is process-wide (Optuna has no per-study switch).
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        base: optuna.samplers.BaseSampler | None = None
        if self.settings.model == "tpe":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                base = optuna.samplers.TPESampler(
                    seed=self.seed,
                    multivariate=self.settings.multivariate,
                    n_startup_trials=self._startup,
                    n_ei_candidates=self.settings.n_ei_candidates,
                    constant_liar=True,
                )
        self._sampler = _ProposalSampler(base)
        if self.study is None:
            self.study = optuna.create_study(direction="minimize", sampler=self._sampler)
        else:
            self.study.sampler = self._sampler

    @property
    def n_valid(self) -> int:
        return len(self._valid)

    @property
    def exhausted(self) -> bool:
        return bool(self._taken.all())

    def _indices(self, values: Values) -> list[int]:
        return [self._index[name][v] for name, v in zip(self.space.names, values, strict=True)]

    def _row_of(self, params: Mapping[str, Any]) -> int | None:
        try:
            return self._row.get(tuple(params[name] for name in self.space.names))
        except KeyError:
            return None

    def _sync(self) -> list[FrozenTrial]:
        """Read what every worker took and measured; the study's trials in number order."""
        assert self.study is not None
        trials = self.study.get_trials(deepcopy=False)
        self._observed.clear()
        for trial in trials:
            row = self._row_of(trial.params)
            if row is None:
                continue
            if spent(trial) or trial.state == TrialState.WAITING:
                self._taken[row] = True
            if trial.state == TrialState.COMPLETE and spent(trial):
                value = trial.value
                self._observed[row] = None if value is None or value >= PENALTY_VALUE else value
            elif trial.state == TrialState.FAIL and "failure" in trial.user_attrs:
                self._taken[row] = True
                self._observed[row] = None
        return trials

    def ask(self) -> Candidate | None:
        """The next configuration to evaluate, never invalid nor a repeat; None when done."""
        assert self.study is not None
        while True:
            with self.claim_lock():
                trials = self._sync()
                if sum(spent(t) for t in trials) >= self.budget:
                    self.budget_reached = True
                    return None
                if self.exhausted:
                    return None
                trial = self._open_trial()
                values = tuple(trial.params[name] for name in self.space.names)
                claimed = self._claimed(trial)
            if claimed:
                return Candidate(trial.number, values, dict(trial.params), trial)

    def _open_trial(self) -> Trial:
        """A new trial holding the configuration to evaluate (None: the proposal was rejected)."""
        assert self.study is not None
        n_taken = int(self._taken.sum())
        if self.exhaustive:
            return self._ask_for(next(r for r in self._order if not self._taken[r]))
        if n_taken < self._startup:
            free_prior = [r for r in self._prior_rows if not self._taken[r]]
            if free_prior:
                return self._ask_for(free_prior[0])
            if self.settings.model == "gp":
                return self._ask_for(self._design_row(n_taken))
            return self._ask_for(next(r for r in self._order if not self._taken[r]))
        if self.settings.model == "gp":
            return self._ask_for(self._gp_choice())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask(self._distributions)
        row = self._row_of(trial.params)
        if row is not None and not self._taken[row]:
            return trial
        reasons = (
            tuple(self.space.violations(trial.params))
            if row is None
            else ("repeats a configuration already proposed",)
        )
        trial.set_user_attr("invalid" if row is None else "repeat", list(reasons))
        self.study.tell(trial, state=TrialState.FAIL)
        self.rejections.append(
            Rejection(trial.number, dict(trial.params), reasons, row is not None)
        )
        values = tuple(trial.params[name] for name in self.space.names)
        return self._ask_for(self._nearest_free(values))

    def _ask_for(self, row: int) -> Trial:
        """Open a trial on one valid row (a waiting retry of another worker comes first)."""
        assert self.study is not None
        self._sampler.fixed = self.space.as_dict(self._valid[row])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return self.study.ask(self._distributions)
        finally:
            self._sampler.fixed = None

    def _claimed(self, trial: Trial) -> bool:
        """Whether `trial` is the first live claim of its configuration within the budget."""
        assert self.study is not None
        earlier = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number]
        for other in earlier:
            if spent(other) and other.params == trial.params:
                trial.set_user_attr("duplicate_of", other.number)
                self.study.tell(trial, state=TrialState.FAIL)
                return False
        if sum(spent(t) for t in earlier) >= self.budget:
            trial.set_user_attr("over_budget", True)
            self.study.tell(trial, state=TrialState.FAIL)
            return False
        row = self._row_of(trial.params)
        if row is not None:
            self._taken[row] = True
        return True

    def _design_row(self, n_taken: int) -> int:
        """The initial design's next free row.

        maximin: the farthest from those taken, among the aligned points for the first
        `aligned_start` (GPU optima sit at powers of two); random: a seeded uniform order;
        mixed: maximin
        for the first half, then random; lhs: the valid point nearest a Latin hypercube
        sample of the parameters' index ranges, so every parameter's choices are covered
        evenly, inner values as well as the ends.
        """
        design = self.settings.initial_design
        if design == "maximin" or (design == "mixed" and 2 * n_taken < self._startup):
            among = None
            if n_taken < self.settings.aligned_start and (self._aligned & ~self._taken).any():
                among = self._aligned
            return self._proposer.farthest(self._taken, among)
        if design == "lhs" and n_taken < len(self._latin):
            return self._nearest_free_index(self._latin[n_taken])
        return next(r for r in self._order if not self._taken[r])

    def _latin_targets(self, n: int) -> np.ndarray:
        """n points x params: each parameter's n strata of its index range, shuffled."""
        columns = []
        for _, choices in self.space.params:
            strata = (self._rng.permutation(n) + self._rng.random(n)) / max(n, 1)
            columns.append(np.minimum(np.floor(strata * len(choices)), len(choices) - 1))
        return np.asarray(columns, dtype=np.float64).T.reshape(n, len(self.space.params))

    def _nearest_free(self, values: Values) -> int:
        return self._nearest_free_index(np.asarray(self._indices(values), dtype=np.float64))

    def _nearest_free_index(self, target: np.ndarray) -> int:
        distance = np.abs(self._valid_idx - target) / self._scale
        score = distance.sum(axis=1) + self._rng.random(len(self._valid)) * 1e-6
        score[self._taken] = np.inf
        return int(np.argmin(score))

    def _gp_choice(self) -> int:
        """The free valid row the GP proposes (autotune.proposal)."""
        rows = list(self._observed)
        return self._proposer.choose(rows, [self._observed[r] for r in rows], self._taken)

    def tell(self, candidate: Candidate, value: float | None, reason: str | None = None) -> None:
        """Report a candidate's value (lower is better) or its failure (value None + reason)."""
        assert self.study is not None
        row = self._row_of(candidate.params)
        try:
            if value is None:
                candidate.trial.set_user_attr("failure", reason or "failed")
                if self.settings.penalize_failures:
                    self.study.tell(candidate.trial, PENALTY_VALUE)
                else:
                    self.study.tell(candidate.trial, state=TrialState.FAIL)
            else:
                self.study.tell(candidate.trial, value)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            # Another worker failed this trial as stale (its heartbeat was late) and enqueued a
            # retry; the retry will measure it again.
            log.warning("trial %d was closed by another worker: %s", candidate.number, exc)
        if row is not None:
            self._observed[row] = value
