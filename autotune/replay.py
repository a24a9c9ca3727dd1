"""Replay recorded GPU tuning spaces to measure the search strategy against random sampling.

Each run gives the strategy an evaluation budget over a space whose every configuration was
timed on a real GPU; the score is t_opt / t_found, the fraction of the optimum reached, with
failed configurations counted as spent evaluations (the strategy never proposes invalid ones:
the space's restrictions are known up front, as Kernel Tuner's are; for a kernel without known
restrictions the valid set is the recorded configurations, see autotune.recorded). Compared
with uniform random sampling of the valid set, the baseline of Schoonhoven et al. (IEEE TEVC
2022).

Usage: python -m autotune.replay [SPACE.json[.gz]|SPACE.csv ...] [--budgets 25 100]
       [--seeds 20] [--strategies gp gp-forest ... tpe random] [--warm-start others|FILE]
       [--jobs N] [--json] [--plot curves.png]

`--strategies` takes the named candidates of autotune.strategy_settings.PRESETS ("gp" is the
default), "tpe" and "random"; `--set NAME=VALUE` overrides one StrategySettings field. Every
candidate's table (shared spaces, held-out spaces, warm start) is in
docs/search-candidates.md, with the reasons for the default.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from autotune.recorded import RecordedSpace, RecordError, load_space
from autotune.strategy import Searcher, StrategySettings, Values
from autotune.strategy_settings import PRESETS, preset_settings
from tessera_core.cli import ArgumentParser, int_at_least, run_cli
from tessera_core.config import TUNING_SPACES_DIR, configure_logging
from tessera_core.errors import UsageError

_REPO = Path(__file__).resolve().parents[1]
PROG = "python -m autotune.replay"
STRATEGIES = (*PRESETS, "tpe", "random")  # the named GP candidates, TPE and uniform sampling
WARM_OTHERS = "others"  # --warm-start others: each space's prior is the other spaces' records


def spaces_dir() -> Path:
    """TESSERA_TUNING_SPACES_DIR, else shared/tuning-spaces in or beside the checkout."""
    configured = TUNING_SPACES_DIR.get()
    if configured:
        return Path(configured)
    inside = _REPO / "shared" / "tuning-spaces"
    return inside if inside.is_dir() else _REPO.parent / "shared" / "tuning-spaces"


def combined_ranking(spaces: Sequence[RecordedSpace]) -> list[Values]:
    """Configurations ranked by their mean log slowdown (t / t_opt) over `spaces`.

    A configuration failed or missing on a space counts as that space's slowest time.
    """
    scores: dict[Values, list[float]] = {}
    for space in spaces:
        worst = max(t for t in space.times_ms.values() if t is not None)
        for values in space.times_ms:
            scores.setdefault(values, [])
        for values in scores:
            t = space.time_ms(values)
            scores[values].append(float(np.log((t if t is not None else worst) / space.optimum_ms)))
    return sorted(scores, key=lambda v: (statistics.fmean(scores[v]), str(v)))


def run_once(
    recorded: RecordedSpace,
    *,
    strategy: str,
    budget: int,
    seed: int,
    settings: StrategySettings | None = None,
    prior: Sequence[Values] = (),
) -> list[float]:
    """Best-so-far t_opt / t_found after each evaluation of one search (0.0: none valid yet).

    The list has `budget` entries (the last value repeats if the space ran out first).
    """
    best = float("inf")
    curve: list[float] = []

    def seen(t: float | None) -> None:
        nonlocal best
        if t is not None:
            best = min(best, t)
        curve.append(recorded.optimum_ms / best if best < float("inf") else 0.0)

    if strategy == "random":
        valid = recorded.valid_points
        rng = np.random.default_rng(seed)
        for row in rng.permutation(len(valid))[:budget]:
            seen(recorded.time_ms(valid[row]))
    elif strategy == "tpe" or strategy in PRESETS:
        base = settings or StrategySettings()
        if strategy == "tpe":
            settings = StrategySettings(**{**asdict(base), "model": "tpe"})
        else:
            settings = preset_settings(strategy, base)
        searcher = Searcher(
            recorded.space, seed=seed, budget=budget, settings=settings, prior=prior
        )
        for _ in range(budget):
            candidate = searcher.ask()
            if candidate is None:
                break
            t = recorded.time_ms(candidate.values)
            searcher.tell(candidate, t, None if t is not None else "failed on the GPU")
            seen(t)
    else:
        raise ValueError(f"strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    return curve + [curve[-1] if curve else 0.0] * (budget - len(curve))


@dataclass(frozen=True)
class ReplayRow:
    """One line of the table: a strategy's fraction of optimum over seeds at one budget."""

    space: str
    budget: int
    strategy: str
    mean: float
    std: float
    seeds: int
    evals_to_90: float | None  # median over seeds; None when fewer than half got there
    evals_to_95: float | None
    seconds: float

    @property
    def mean_fraction(self) -> float:
        return self.mean


def _evals_to(curves: Sequence[Sequence[float]], level: float) -> float | None:
    firsts = [
        next((i + 1 for i, f in enumerate(curve) if f >= level), float("inf")) for curve in curves
    ]
    median = statistics.median(firsts)
    return None if median == float("inf") else float(median)


def summarise(
    space: str, strategy: str, budget: int, curves: Sequence[Sequence[float]], seconds: float
) -> ReplayRow:
    finals = [curve[budget - 1] for curve in curves]
    cut = [curve[:budget] for curve in curves]
    return ReplayRow(
        space=space,
        budget=budget,
        strategy=strategy,
        mean=statistics.fmean(finals),
        std=statistics.pstdev(finals),
        seeds=len(curves),
        evals_to_90=_evals_to(cut, 0.90),
        evals_to_95=_evals_to(cut, 0.95),
        seconds=seconds,
    )


# One replay task: (space path, strategy label, model, budget, seed, prior paths, settings).
Task = tuple[str, str, str, int, int, tuple[str, ...], dict[str, Any]]
_SPACES: dict[str, RecordedSpace] = {}


def _space(path: str) -> RecordedSpace:
    if path not in _SPACES:
        _SPACES[path] = load_space(Path(path))
    return _SPACES[path]


def _run_task(task: Task) -> tuple[list[float], float]:
    path, _, strategy, budget, seed, prior_paths, overrides = task
    start = time.perf_counter()
    prior = combined_ranking([_space(p) for p in prior_paths]) if prior_paths else []
    settings = StrategySettings(**overrides)
    curve = run_once(
        _space(path), strategy=strategy, budget=budget, seed=seed, settings=settings, prior=prior
    )
    return curve, time.perf_counter() - start


def _anytime(strategy: str) -> bool:
    """Whether a run's first n choices do not depend on its budget (one run serves all)."""
    return strategy in PRESETS or strategy == "random"


def replay(
    recorded: RecordedSpace,
    *,
    budget: int,
    seeds: int,
    strategies: Sequence[str] = ("gp", "random"),
    settings: StrategySettings | None = None,
    prior: Sequence[Values] = (),
) -> list[ReplayRow]:
    """Run every strategy for seeds 0..seeds-1 at `budget` evaluations (in this process)."""
    rows = []
    for strategy in strategies:
        start = time.perf_counter()
        curves = [
            run_once(
                recorded,
                strategy=strategy,
                budget=budget,
                seed=s,
                settings=settings,
                prior=prior,
            )
            for s in range(seeds)
        ]
        rows.append(summarise(recorded.name, strategy, budget, curves, time.perf_counter() - start))
    return rows


def replay_files(
    paths: Sequence[Path],
    *,
    budgets: Sequence[int],
    seeds: int,
    strategies: Sequence[str],
    warm_start: str | None = None,
    overrides: dict[str, Any] | None = None,
    jobs: int = 1,
) -> tuple[list[ReplayRow], dict[tuple[str, str], list[float]]]:
    """Replay every file; returns the rows and each (space, strategy)'s mean best-so-far curve.

    warm_start: "others" (each space's prior: the other given spaces of the same kernel and
    parameters) or a recorded file used as every space's prior; rows get a "+warm" label.
    """
    spaces = {str(p): _space(str(p)) for p in paths}
    tasks: list[Task] = []
    for path, space in spaces.items():
        priors: tuple[str, ...] = ()
        if warm_start == WARM_OTHERS:
            priors = tuple(
                other
                for other, o in spaces.items()
                if other != path and o.kernel == space.kernel and o.space.names == space.space.names
            )
            if not priors:
                raise RecordError(
                    f"--warm-start others: no other given space records kernel {space.kernel!r}"
                )
        elif warm_start:
            priors = (warm_start,)
        for strategy in strategies:
            label = strategy + ("+warm" if priors and strategy != "random" else "")
            prior = priors if strategy != "random" else ()
            runs = [max(budgets)] if _anytime(strategy) else sorted(set(budgets))
            for budget in runs:
                tasks += [
                    (path, label, strategy, budget, s, prior, overrides or {}) for s in range(seeds)
                ]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_run_task, tasks, chunksize=1)
    else:
        results = [_run_task(task) for task in tasks]
    grouped: dict[tuple[str, str, int], list[tuple[list[float], float]]] = {}
    for task, result in zip(tasks, results, strict=True):
        grouped.setdefault((task[0], task[1], task[3]), []).append(result)
    rows: list[ReplayRow] = []
    curves: dict[tuple[str, str], list[float]] = {}
    for (path, label, run_budget), results_of in grouped.items():
        name = spaces[path].name
        runs_curves = [curve for curve, _ in results_of]
        seconds = sum(s for _, s in results_of)
        for budget in sorted(set(budgets)):
            if budget == run_budget or (_anytime(label.split("+")[0]) and budget <= run_budget):
                rows.append(summarise(name, label, budget, runs_curves, seconds))
        if run_budget == max(budgets):
            curves[(name, label)] = list(np.mean(np.asarray(runs_curves), axis=0))
    rows.sort(key=lambda r: (r.space, r.budget, strategies.index(r.strategy.split("+")[0])))
    return rows, curves


def format_table(rows: Sequence[ReplayRow]) -> str:
    lines = [
        "| space | budget | strategy | mean t_opt/t_found | std | seeds | evals to 90% | "
        "evals to 95% | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def n(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    for r in rows:
        lines.append(
            f"| {r.space} | {r.budget} | {r.strategy} | {r.mean:.3f} | {r.std:.3f} | {r.seeds} | "
            f"{n(r.evals_to_90)} | {n(r.evals_to_95)} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    known = {f.name: f.type for f in fields(StrategySettings)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known or key == "model":
            raise RecordError(
                f"--set {item!r}: expected NAME=VALUE with NAME one of "
                f"{', '.join(k for k in known if k != 'model')}"
            )
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            raise RecordError(
                f"--set {item!r}: VALUE must be a JSON number or true/false"
            ) from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "spaces", nargs="*", type=Path, help="Kernel Tuner cache files (.json, .json.gz) or CSV"
    )
    parser.add_argument(
        "--budgets", type=int_at_least(1), nargs="+", default=[25, 100], help="evaluations per run"
    )
    parser.add_argument(
        "--seeds", type=int_at_least(1), default=20, help="runs per (space, budget)"
    )
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["gp", "random"])
    parser.add_argument(
        "--warm-start",
        metavar="others|FILE",
        help="seed the search with a prior ranking: 'others' (the other given spaces of the "
        "same kernel) or one recorded file",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="override a StrategySettings field (candidate studies)",
    )
    parser.add_argument(
        "--jobs", type=int_at_least(1), default=1, help="parallel replay processes (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="mean best-so-far curves")
    args = parser.parse_args(argv)
    paths = args.spaces or sorted(spaces_dir().glob("*.json.gz"))
    if not paths:
        parser.error(f"no spaces given and none found in {spaces_dir()}")
    try:
        overrides = _overrides(args.set)
        if args.warm_start not in (None, WARM_OTHERS):
            load_space(Path(args.warm_start))
        if args.plot is not None:
            from autotune.replay_plot import require_matplotlib

            require_matplotlib()
        rows, curves = replay_files(
            paths,
            budgets=args.budgets,
            seeds=args.seeds,
            strategies=args.strategies,
            warm_start=args.warm_start,
            overrides=overrides,
            jobs=args.jobs,
        )
    except RecordError as exc:  # a missing, malformed or hostile recorded file
        raise UsageError(str(exc)) from None
    if args.json:
        for row in rows:
            record = asdict(row)
            print(json.dumps(record, sort_keys=True))
    else:
        print(format_table(rows))
    if args.plot is not None:
        from autotune.replay_plot import plot_curves

        plot_curves(curves, args.plot)
        print(f"curves written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
