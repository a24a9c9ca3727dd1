"""Replay recorded GPU tuning spaces (Kernel Tuner cache files) to measure the search strategy.

Each run gives the strategy an evaluation budget over a space whose every configuration was
timed on a real GPU; the score is t_opt / t_found, the fraction of the optimum reached, with
failed configurations counted as spent evaluations (the strategy never proposes invalid ones:
the space's restrictions are known up front, as Kernel Tuner's are). Compared with uniform
random sampling of the valid set, the baseline of Schoonhoven et al. (IEEE TEVC 2022).

Usage: python -m autotune.replay [--budgets 25 100] [--seeds 20] [SPACE.json.gz ...]

Measured with the default StrategySettings, 50 seeds (published: Schoonhoven et al. 2022, best
algorithm vs random sampling, 50 runs):

| space | evaluations | this strategy | random (valid set) | published best | published random |
|---|---|---|---|---|---|
| convolution_A4000 | 25 | 0.781 +- 0.117 | 0.726 | 0.752 | 0.673 |
| convolution_A4000 | 100 | 0.926 +- 0.078 | 0.827 | 0.905 | 0.797 |
| gemm_RTX_2080_Ti | 25 | 0.879 +- 0.060 | 0.791 | - | - |
| gemm_RTX_2080_Ti | 100 | 0.964 +- 0.039 | 0.867 | 0.937 | 0.834 |
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.strategy import Searcher, SearchSpace, StrategySettings, Values
from tessera_core.cli import ArgumentParser, int_at_least, run_cli
from tessera_core.config import TUNING_SPACES_DIR, configure_logging
from tessera_core.errors import UsageError

_REPO = Path(__file__).resolve().parents[1]


def spaces_dir() -> Path:
    """TESSERA_TUNING_SPACES_DIR, else shared/tuning-spaces in or beside the checkout."""
    configured = TUNING_SPACES_DIR.get()
    if configured:
        return Path(configured)
    inside = _REPO / "shared" / "tuning-spaces"
    return inside if inside.is_dir() else _REPO.parent / "shared" / "tuning-spaces"


STRATEGIES = ("tpe", "random")
PROG = "python -m autotune.replay"

Restriction = tuple[str, Callable[[Mapping[str, Any]], bool]]

# The kernels' restrictions as published with the spaces (shared/tuning-spaces/README.md).
RESTRICTIONS: dict[str, tuple[Restriction, ...]] = {
    "convolution_kernel": (
        (
            "padding_needs_unaligned_x",
            lambda p: p["use_padding"] == 0 or p["block_size_x"] % 32 != 0,
        ),
        ("threads", lambda p: p["block_size_x"] * p["block_size_y"] <= 1024),
        ("padding_needs_shmem", lambda p: p["use_padding"] == 0 or p["use_shmem"] != 0),
        (
            "shmem_tile",
            lambda p: (
                p["use_shmem"] == 0
                or (p["block_size_x"] * p["tile_size_x"] + 14)
                * (p["block_size_y"] * p["tile_size_y"] + 14)
                < 12 * 1024
            ),
        ),
    ),
    "Xgemm": (
        ("KWG_KWI", lambda p: p["KWG"] % p["KWI"] == 0),
        ("MWG_MDIMC_VWM", lambda p: p["MWG"] % (p["MDIMC"] * p["VWM"]) == 0),
        ("NWG_NDIMC_VWN", lambda p: p["NWG"] % (p["NDIMC"] * p["VWN"]) == 0),
        ("MWG_MDIMA_VWM", lambda p: p["MWG"] % (p["MDIMA"] * p["VWM"]) == 0),
        ("NWG_NDIMB_VWN", lambda p: p["NWG"] % (p["NDIMB"] * p["VWN"]) == 0),
        ("KWG_MDIMA", lambda p: p["KWG"] % ((p["MDIMC"] * p["NDIMC"]) // p["MDIMA"]) == 0),
        ("KWG_NDIMB", lambda p: p["KWG"] % ((p["MDIMC"] * p["NDIMC"]) // p["NDIMB"]) == 0),
    ),
}


@dataclass(frozen=True)
class RecordedSpace:
    """A recorded space: its search space, each configuration's time (None: failed), the optimum."""

    name: str
    space: SearchSpace
    times_ms: dict[Values, float | None]
    optimum_ms: float

    @property
    def valid_points(self) -> list[Values]:
        return self.space.valid_points

    def time_ms(self, values: Values) -> float | None:
        """The recorded time; None for a failed or unrecorded configuration."""
        return self.times_ms.get(values)


def _violations(restrictions: Sequence[Restriction]) -> Callable[[Mapping[str, Any]], list[str]]:
    def violations(params: Mapping[str, Any]) -> list[str]:
        return [name for name, ok in restrictions if not ok(params)]

    return violations


def load_space(path: Path) -> RecordedSpace:
    """Read a gzip Kernel Tuner cache file; ValueError for a kernel without known restrictions."""
    with gzip.open(path, "rt") as handle:
        data = json.load(handle)
    kernel = data["kernel_name"]
    if kernel not in RESTRICTIONS:
        raise ValueError(f"{path}: no restrictions known for kernel {kernel!r}; add them above")
    keys = data["tune_params_keys"]
    params = tuple((k, tuple(data["tune_params"][k])) for k in keys)
    times: dict[Values, float | None] = {}
    for record in data["cache"].values():
        values = tuple(record[k] for k in keys)
        t = record.get("time")
        failed = "__error__" in record or not isinstance(t, (int, float))
        times[values] = None if failed else float(t)
    finite = [t for t in times.values() if t is not None]
    return RecordedSpace(
        name=path.name.split(".")[0],
        space=SearchSpace(params=params, violations=_violations(RESTRICTIONS[kernel])),
        times_ms=times,
        optimum_ms=min(finite),
    )


def run_once(
    recorded: RecordedSpace,
    *,
    strategy: str,
    budget: int,
    seed: int,
    settings: StrategySettings | None = None,
) -> float:
    """t_opt / t_found of one search of `budget` evaluations (0.0 when nothing valid was found)."""
    best = float("inf")
    if strategy == "random":
        valid = recorded.valid_points
        rng = np.random.default_rng(seed)
        for row in rng.permutation(len(valid))[:budget]:
            t = recorded.time_ms(valid[row])
            if t is not None:
                best = min(best, t)
    elif strategy == "tpe":
        searcher = Searcher(
            recorded.space, seed=seed, budget=budget, settings=settings or StrategySettings()
        )
        for _ in range(budget):
            candidate = searcher.ask()
            if candidate is None:
                break
            t = recorded.time_ms(candidate.values)
            searcher.tell(candidate, t, None if t is not None else "failed on the GPU")
            if t is not None:
                best = min(best, t)
    else:
        raise ValueError(f"strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    return recorded.optimum_ms / best if best < float("inf") else 0.0


@dataclass(frozen=True)
class ReplayRow:
    """One line of the table: a strategy's mean and std fraction of optimum over seeds."""

    space: str
    budget: int
    strategy: str
    mean_fraction: float
    std_fraction: float
    seeds: int
    seconds: float


def replay(
    recorded: RecordedSpace,
    *,
    budget: int,
    seeds: int,
    strategies: Sequence[str] = STRATEGIES,
    settings: StrategySettings | None = None,
) -> list[ReplayRow]:
    """Run every strategy for seeds 0..seeds-1 at `budget` evaluations."""
    rows = []
    for strategy in strategies:
        start = time.perf_counter()
        fractions = [
            run_once(recorded, strategy=strategy, budget=budget, seed=s, settings=settings)
            for s in range(seeds)
        ]
        rows.append(
            ReplayRow(
                space=recorded.name,
                budget=budget,
                strategy=strategy,
                mean_fraction=statistics.fmean(fractions),
                std_fraction=statistics.pstdev(fractions),
                seeds=seeds,
                seconds=time.perf_counter() - start,
            )
        )
    return rows


def format_table(rows: Sequence[ReplayRow]) -> str:
    lines = [
        "| space | budget | strategy | mean t_opt/t_found | std | seeds | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.space} | {r.budget} | {r.strategy} | {r.mean_fraction:.3f} | "
            f"{r.std_fraction:.3f} | {r.seeds} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spaces", nargs="*", type=Path, help="Kernel Tuner cache files (.json.gz)")
    parser.add_argument(
        "--budgets", type=int_at_least(1), nargs="+", default=[25, 100], help="evaluations per run"
    )
    parser.add_argument(
        "--seeds", type=int_at_least(1), default=20, help="runs per (space, budget)"
    )
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    args = parser.parse_args(argv)
    paths = args.spaces or sorted(spaces_dir().glob("*.json.gz"))
    if not paths:
        parser.error(f"no spaces given and none found in {spaces_dir()}")
    rows: list[ReplayRow] = []
    for path in paths:
        try:
            recorded = load_space(path)
        except (OSError, EOFError, ValueError, KeyError, TypeError, RecursionError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(
                f"{path}: not a readable Kernel Tuner cache file (.json.gz): {reason}"
            ) from None
        for budget in args.budgets:
            rows += replay(recorded, budget=budget, seeds=args.seeds, strategies=args.strategies)
            print(format_table(rows[-len(args.strategies) :]).splitlines()[-1], file=sys.stderr)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
