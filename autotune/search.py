"""Tune one problem: search its family's tile space, compile in batches, keep the best."""

from __future__ import annotations

import collections
import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from optuna.trial import TrialState
from tqdm import tqdm

from autotune.job import DEFAULT_TRIALS  # the one default of the job, the CLI and tune()
from autotune.objective import Objective, ObjectiveKind, choose_objective
from autotune.strategy import (
    PENALTY_VALUE,
    Candidate,
    Searcher,
    SearchSpace,
    StrategySettings,
    Values,
    spent,
)
from autotune.study import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STALE_AFTER_S,
    claim_lock,
    fail_stale_trials,
    heartbeat,
)
from tessera_core.config import default_jobs
from tessera_core.errors import (
    CompileError,
    IncorrectResultError,
    InvalidConfigError,
    LaunchError,
    NoValidConfigError,
    OutOfResourcesError,
)
from tessera_core.space import Space
from tessera_core.types import Problem, TileConfig

Status = Literal[
    "ok", "invalid", "compile_error", "spill", "out_of_resources", "incorrect", "launch_error"
]
# compile_fn(problem, configs, *, arch, jobs) -> one compiled kernel or CompileError per config.
CompileFn = Callable[..., Sequence[Any]]
# prescreen(problem, configs) -> one score per config, lower is more promising (inf: hopeless).
PrescreenFn = Callable[[Problem, Sequence[TileConfig]], Sequence[float]]
MAX_REASONS_LISTED = 12


@dataclass(frozen=True)
class TrialRecord:
    """One proposal of the search and what became of it."""

    number: int  # Optuna trial number; invalid proposals are numbered too
    config: dict[str, int]
    status: Status
    reason: str | None = None
    value_ms: float | None = None
    kind: ObjectiveKind | None = None
    resources: dict[str, int] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    spent: bool = True  # False for proposals the space rejected before compiling

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "detail": dict(self.detail)}


@dataclass(frozen=True)
class TuneResult:
    """The fastest configuration found and the full record of how."""

    problem: Problem
    arch: str
    objective_kind: ObjectiveKind
    best_config: TileConfig
    best_time_ms: float
    records: tuple[TrialRecord, ...]
    trials_run: int  # configurations compiled and evaluated (the budget's unit)
    n_valid: int  # evaluated successfully
    n_failed: int  # compiled or evaluated but failed (compile error, spill, resources, ...)
    n_invalid: int  # proposals rejected by the space before compiling (not counted in trials)
    wall_time_s: float
    stopped_by: Literal["trials", "timeout", "exhausted"]
    seed: int
    prescreened: int | None = None  # valid configurations the prescreen kept (None: no prescreen)


def family_search_space(
    space: Space, problem: Problem, arch: str, *, keep: frozenset[Values] | None = None
) -> SearchSpace:
    """The family's Space for one problem and arch as the strategy's generic SearchSpace.

    keep: when given, only these points are valid (a prescreen's most promising ones).
    """
    names = tuple(p.name for p in space.params)

    def violations(params: Mapping[str, Any]) -> list[str]:
        try:
            config = TileConfig.from_dict(params)
        except ValueError as exc:
            return [str(exc)]
        found = space.violations(config, problem, arch)
        if not found and keep is not None and tuple(params[n] for n in names) not in keep:
            return ["not among the prescreen's most promising configurations"]
        return found

    return SearchSpace(
        params=tuple((p.name, p.choices) for p in space.params), violations=violations
    )


def _default_compile(family: Any) -> CompileFn:
    def compile_fn(
        problem: Problem, configs: Sequence[TileConfig], *, arch: str, jobs: int
    ) -> Sequence[Any]:
        from generator.compile import compile_many
        from generator.render import render

        rendereds = [render(family, problem, config, arch=arch) for config in configs]
        return compile_many(rendereds, arch=arch, jobs=jobs)

    return compile_fn


def _summarise(reasons: Sequence[str]) -> list[str]:
    counts = collections.Counter(reasons)
    lines = [f"{n} x {reason}" if n > 1 else reason for reason, n in counts.most_common()]
    if len(lines) > MAX_REASONS_LISTED:
        lines = [*lines[:MAX_REASONS_LISTED], f"... and {len(lines) - MAX_REASONS_LISTED} more"]
    return lines


def model_prescreen(compile_fn: CompileFn, arch: str, jobs: int) -> PrescreenFn:
    """Score configurations with the analytical cost model (compiled for real resources)."""

    def prescreen(problem: Problem, configs: Sequence[TileConfig]) -> list[float]:
        from autotune.objective import ModelObjective

        model = ModelObjective(arch=arch)
        scores = []
        outcomes = compile_fn(problem, list(configs), arch=arch, jobs=jobs)
        model.prefetch(outcomes, jobs=jobs)
        for config, outcome in zip(configs, outcomes, strict=True):
            try:
                scores.append(model.evaluate(problem, config, outcome).time_ms)
            except Exception:  # a candidate the model cannot score is simply not kept
                scores.append(math.inf)
        return scores

    return prescreen


def _prescreened(
    search_space: SearchSpace, problem: Problem, prescreen: PrescreenFn, top_k: int
) -> frozenset[Values]:
    """The `top_k` valid points the prescreen scores best (ties in the space's order)."""
    valid = search_space.valid_points
    configs = [TileConfig.from_dict(search_space.as_dict(v)) for v in valid]
    scores = list(prescreen(problem, configs))
    order = sorted(range(len(valid)), key=lambda i: (scores[i], i))
    return frozenset(valid[i] for i in order[:top_k] if math.isfinite(scores[i]))


def _study_best(study: Any, names: Sequence[str]) -> TrialRecord | None:
    """The best evaluation any worker of a shared study recorded, as this worker's record."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if spent(t) and t.value is not None and t.value < PENALTY_VALUE
    ]
    if not done:
        return None
    best = min(done, key=lambda t: t.value)
    config = {name: best.params[name] for name in names}
    return TrialRecord(best.number, config, "ok", "", value_ms=float(best.value))


def _no_valid_points(space: SearchSpace) -> list[str]:
    """Why every point of `space` is invalid, most frequent rule first."""
    reasons = []
    for values in space.points():
        reasons += space.violations(space.as_dict(values))
    return _summarise(reasons)


def _evaluate(
    candidate: Candidate, outcome: Any, problem: Problem, objective: Objective
) -> TrialRecord:
    """Turn one compile outcome into a record; expected failures are recorded, not raised."""
    config = TileConfig.from_dict(candidate.params)
    resources: dict[str, int] | None = None

    def failed(status: Status, reason: str) -> TrialRecord:
        return TrialRecord(candidate.number, config.to_dict(), status, reason, resources=resources)

    if isinstance(outcome, CompileError):
        return failed("compile_error", str(outcome).splitlines()[0])
    if isinstance(outcome, OutOfResourcesError):
        return failed("out_of_resources", str(outcome))
    if isinstance(outcome, BaseException):
        raise outcome
    res = outcome.resources
    resources = res.to_dict() if hasattr(res, "to_dict") else dict(vars(res))
    if res.spill_store_bytes > 0 or res.spill_load_bytes > 0:
        return failed(
            "spill",
            f"spills {res.spill_store_bytes} bytes stored, {res.spill_load_bytes} loaded "
            f"per thread at {res.registers} registers",
        )
    try:
        evaluation = objective.evaluate(problem, config, outcome)
    except OutOfResourcesError as exc:
        return failed("out_of_resources", str(exc))
    except IncorrectResultError as exc:
        return failed("incorrect", str(exc))
    except LaunchError as exc:
        return failed("launch_error", str(exc))
    except InvalidConfigError as exc:
        return failed("invalid", str(exc))
    return TrialRecord(
        candidate.number,
        config.to_dict(),
        "ok",
        None,
        evaluation.time_ms,
        evaluation.kind,
        resources,
        evaluation.detail,
    )


def tune(
    problem: Problem,
    *,
    arch: str,
    trials: int = DEFAULT_TRIALS,
    timeout_s: float | None = None,
    seed: int = 0,
    jobs: int | None = None,
    objective: Objective | None = None,
    progress: bool = True,
    compile_fn: CompileFn | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    space: Space | None = None,
    settings: StrategySettings | None = None,
    study: Any = None,
    prior: Sequence[Mapping[str, Any]] = (),
    prescreen_top_k: int | None = None,
    prescreen: PrescreenFn | None = None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> TuneResult:
    """Search `problem`'s tile space on `arch` for the fastest configuration.

    Args:
        trials: evaluations to spend (compiled candidates); invalid proposals and repeats
            are never spent.
        timeout_s: stop starting new batches after this many seconds.
        jobs: candidates compiled in parallel per batch (default: `default_jobs()`).
        objective: default `choose_objective(arch)`: measured on a GPU of `arch`, else model.
        compile_fn: `(problem, configs, *, arch, jobs) -> [CompiledKernel | CompileError]`;
            default renders with the family's template and calls generator.compile.compile_many.
        on_trial: called with every record as it is made.
        space: default the family's space (templates.registry).
        study: an Optuna study shared with other workers (autotune.study.open_study): `trials`
            is then the study's total, and configurations any worker took are never repeated;
            running trials keep a heartbeat every `heartbeat_s`, and another worker's trial
            silent for `stale_after_s` is failed and retried once.
        prior: configurations ranked best first (measured on another GPU): a warm start.
        prescreen_top_k: measure only the k valid configurations `prescreen` ranks best
            (default prescreen: the cost model on each compiled candidate).

    Raises:
        NoValidConfigError: no candidate was valid, listing why each kind failed.
    """
    if trials < 1:
        raise ValueError(f"trials={trials}: must be at least 1")
    start = time.perf_counter()
    family = None
    if space is None or compile_fn is None:
        from templates.registry import family_for

        family = family_for(problem, arch)  # gemm_sm90 for an aligned gemm on sm_90a
        space = space or family.space
    compile_fn = compile_fn or _default_compile(family)
    owned = objective is None  # an objective made here is closed here (device buffers)
    objective = objective or choose_objective(arch)
    jobs = max(1, jobs or default_jobs())
    search_space = family_search_space(space, problem, arch)
    kept: int | None = None
    if prescreen_top_k is not None:
        if prescreen_top_k < 1:
            raise ValueError(f"prescreen_top_k={prescreen_top_k}: must be at least 1")
        prescreen = prescreen or model_prescreen(compile_fn, arch, jobs)
        keep = _prescreened(search_space, problem, prescreen, prescreen_top_k)
        kept = len(keep)
        search_space = family_search_space(space, problem, arch, keep=keep)
    names = search_space.names
    searcher = Searcher(
        search_space,
        seed=seed,
        budget=trials,
        settings=settings or StrategySettings(),
        study=study,
        prior=[tuple(c[n] for n in names) for c in prior if all(n in c for n in names)],
        claim_lock=claim_lock(study),
    )
    if searcher.n_valid == 0:
        raise NoValidConfigError(
            f"{problem.family} {problem.shape_str()} on {arch}", _no_valid_points(search_space)
        )

    records: list[TrialRecord] = []
    evaluated = 0
    stopped_by: Literal["trials", "timeout", "exhausted"] = "trials"
    best: TrialRecord | None = None

    def record(rec: TrialRecord) -> None:
        records.append(rec)
        if on_trial is not None:
            on_trial(rec)

    bar = tqdm(
        total=trials,
        file=sys.stderr,
        disable=not progress,
        unit="trial",
        desc=f"tune {problem.family} {problem.shape_str()} [{objective.kind}]",
    )
    try:
        while evaluated < trials:
            if timeout_s is not None and time.perf_counter() - start >= timeout_s:
                stopped_by = "timeout"
                break
            if study is not None:
                fail_stale_trials(study, stale_after_s=stale_after_s)
            batch: list[Candidate] = []
            while len(batch) < min(jobs, trials - evaluated):
                candidate = searcher.ask()
                if candidate is None:
                    break
                batch.append(candidate)
            for rejection in searcher.rejections:
                if not rejection.repeat:
                    reason = "; ".join(rejection.reasons)
                    record(
                        TrialRecord(
                            rejection.number, rejection.params, "invalid", reason, spent=False
                        )
                    )
            searcher.rejections.clear()
            if not batch:
                stopped_by = "trials" if searcher.budget_reached else "exhausted"
                break
            configs = [TileConfig.from_dict(c.params) for c in batch]
            alive = (
                heartbeat([c.trial for c in batch], interval_s=heartbeat_s)
                if study is not None
                else contextlib.nullcontext()
            )
            with alive:
                outcomes = compile_fn(problem, configs, arch=arch, jobs=jobs)
                prefetch = getattr(objective, "prefetch", None)
                if prefetch is not None:  # e.g. the model's SASS histograms, side by side
                    prefetch(outcomes, jobs=jobs)
                evaluated_batch = [
                    _evaluate(candidate, outcome, problem, objective)
                    for candidate, outcome in zip(batch, outcomes, strict=True)
                ]
            for candidate, rec in zip(batch, evaluated_batch, strict=True):
                if rec.resources is not None:
                    candidate.trial.set_user_attr("resources", rec.resources)
                searcher.tell(candidate, rec.value_ms, rec.reason)
                evaluated += 1
                record(rec)
                if rec.value_ms is not None and (
                    best is None or best.value_ms is None or rec.value_ms < best.value_ms
                ):
                    best = rec
                bar.update(1)
                if best is not None:
                    bar.set_postfix_str(f"best {best.value_ms:.4f} ms ({objective.kind})")
    finally:
        bar.close()
        close = getattr(objective, "close", None)
        if owned and close is not None:
            close()

    if (best is None or best.value_ms is None) and study is not None:
        best = _study_best(study, search_space.names) or best  # the others spent the budget
    if best is None or best.value_ms is None:
        failures = [f"{r.status}: {r.reason}" for r in records if r.status != "ok"]
        raise NoValidConfigError(
            f"{problem.family} {problem.shape_str()} on {arch}",
            _summarise(failures) or ["no candidate was evaluated (timeout too short?)"],
        )
    return TuneResult(
        problem=problem,
        arch=arch,
        objective_kind=objective.kind,
        best_config=TileConfig.from_dict(best.config),
        best_time_ms=best.value_ms,
        records=tuple(records),
        trials_run=evaluated,
        n_valid=sum(r.status == "ok" for r in records),
        n_failed=sum(r.status != "ok" and r.spent for r in records),
        n_invalid=sum(not r.spent for r in records),
        wall_time_s=time.perf_counter() - start,
        stopped_by=stopped_by,
        seed=seed,
        prescreened=kept,
    )
