"""`python -m runtime.bench`: the standard configuration sets through every tier, traced.

It lives at the top of the stack (runtime) because it drives the Runtime's tiers; it writes
what `python -m autotune.report` reads: a JSONL trace of the measured calls, the trial records
of the tuning that tier 3 needs, and a summary with the cross-tier consistency checks.

Per problem and tier: a Runtime pinned to that tier (tier 1: the reference only; tier 2: the
generic kernel from the first call; tier 3: the cached specialized kernel from the first call,
tuned beforehand if missing), `warmup` untraced calls (which build and load the kernel), then
`repeats` traced calls on a second Runtime over the same inputs, the tiers interleaved call by
call. The warm-up's outputs of tiers 2 and 3 are compared with tier 1's on the same inputs.
On a GPU the inputs are host arrays, so a compiled tier's wall time includes the copies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.job import TuneRequest
from autotune.job import run as run_job
from autotune.report.inputs import write_trials
from runtime.config import Device, RuntimeConfig
from runtime.runtime import Runtime
from tessera_core.cli import ArgumentParser, int_at_least, run_cli
from tessera_core.config import configure_logging
from tessera_core.errors import TesseraError
from tessera_core.hardware import ARCHS
from tessera_core.types import AttentionProblem, GemmProblem, Problem

SET_NAMES = ("small", "medium", "large", "variable", "mixed")
TRACE_NAME, SUMMARY_NAME, TRIALS_NAME = "trace.jsonl", "bench.json", "trials.jsonl"


def _attention(
    b: int, h: int, s: int, d: int, dtype: str = "fp16", causal: bool = False
) -> Problem:
    return AttentionProblem(b, h, s, s, d, dtype=dtype, causal=causal)  # type: ignore[arg-type]


def _gemm(m: int, n: int, k: int, dtype: str = "fp16") -> Problem:
    return GemmProblem(m, n, k, dtype=dtype)  # type: ignore[arg-type]


# The seed's standard sets at three scales: full size on a GPU, reduced for the CPU emulator
# (which runs every thread of the real kernel on the host), and a CI-sized quick run.
SETS: dict[str, dict[str, tuple[Problem, ...]]] = {
    "full": {
        "small": (_attention(8, 16, 512, 64), _gemm(1024, 1024, 1024)),
        "medium": (_attention(8, 16, 2048, 64), _gemm(2048, 2048, 2048)),
        "large": (_attention(8, 16, 8192, 128), _gemm(8192, 8192, 8192)),
        "variable": tuple(_attention(4, 16, s, 64, causal=True) for s in (500, 1000, 1537, 2048)),
        "mixed": (_attention(8, 16, 2048, 64, "bf16"), _gemm(4096, 4096, 4096, "bf16")),
    },
    "emulator": {
        "small": (_attention(1, 2, 64, 64), _gemm(64, 64, 64)),
        "medium": (_attention(1, 2, 128, 64), _gemm(128, 128, 128)),
        "large": (_attention(1, 4, 256, 64), _gemm(256, 256, 256)),
        "variable": tuple(_attention(1, 2, s, 64, causal=True) for s in (48, 97, 160)),
        "mixed": (_attention(1, 2, 64, 64, "bf16"), _gemm(64, 64, 64, "bf16")),
    },
    "quick": {
        "small": (_attention(1, 1, 32, 32),),
        "medium": (_attention(1, 1, 64, 32),),
        "large": (_attention(1, 2, 64, 32),),
        "variable": (_attention(1, 1, 33, 32, causal=True),),
        "mixed": (_attention(1, 1, 32, 32, "bf16"),),
    },
}


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """One bench run; the CLI parses into exactly this."""

    out_dir: Path
    device: Device = "emulator"
    arch: str | None = None
    scale: str = "emulator"  # "full" | "emulator" | "quick"
    sets: tuple[str, ...] = SET_NAMES
    tiers: tuple[int, ...] = (1, 2, 3)
    warmup: int = 2
    repeats: int = 10
    trials: int = 4
    seed: int = 0
    cache_dir: Path | None = None  # default: out_dir / "kernels"

    def __post_init__(self) -> None:
        if self.scale not in SETS:
            raise ValueError(f"scale={self.scale!r}: expected one of {', '.join(SETS)}")
        unknown = [s for s in self.sets if s not in SET_NAMES]
        if unknown or not self.sets:
            raise ValueError(f"sets={list(self.sets)}: expected names from {', '.join(SET_NAMES)}")
        if not self.tiers or any(t not in (1, 2, 3) for t in self.tiers) or 1 not in self.tiers:
            raise ValueError(f"tiers={list(self.tiers)}: expected 1 and any of 2, 3")
        for name in ("warmup", "repeats", "trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected an integer >= 1")

    @property
    def kernel_cache(self) -> Path:
        return self.cache_dir or self.out_dir / "kernels"


def _tier_config(settings: BenchSettings, tier: int, trace: Path | None) -> RuntimeConfig:
    pinned = {
        1: {"tier2": False, "tier3": False},
        2: {"tier2_min_calls": 0, "tier3": False},
        3: {"tier2": False, "tier3_min_calls": 0},
    }[tier]
    return RuntimeConfig(
        device=settings.device,
        arch=settings.arch,
        cache_dirs=(settings.kernel_cache,),
        trace_path=trace,
        tuning_workers=0,  # tier 3 is tuned beforehand, on this thread, with its trials kept
        **pinned,  # type: ignore[arg-type]
    )


def _inputs(problem: Problem, seed: int) -> tuple[np.ndarray, ...]:
    import ml_dtypes

    dtype = np.float16 if problem.dtype == "fp16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(seed)
    shapes: list[tuple[int, ...]]
    if isinstance(problem, AttentionProblem):
        p = problem
        shapes = [(p.batch, p.heads, s, p.head_dim) for s in (p.seq_q, p.seq_kv, p.seq_kv)]
    else:
        g = problem
        assert isinstance(g, GemmProblem)
        shapes = [(g.m, g.k), (g.k, g.n)]
    return tuple(rng.standard_normal(shape).astype(dtype) for shape in shapes)


def _call(rt: Runtime, problem: Problem, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    if isinstance(problem, AttentionProblem):
        q, k, v = inputs
        return np.asarray(rt.attention(q, k, v, causal=problem.causal))
    a, b = inputs
    return np.asarray(rt.gemm(a, b))


def _label(problem: Problem) -> str:
    mask = " causal" if getattr(problem, "causal", False) else ""
    return f"{problem.op} {problem.dtype} {problem.shape_str()}{mask}"


def _consistency(problem: Problem, tier: int, got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    from generator.verify import Tolerance

    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    rel = float(np.linalg.norm(got64 - want64) / max(float(np.linalg.norm(want64)), 1e-30))
    tolerance = Tolerance.of(problem.dtype).rel
    return {
        "problem": _label(problem),
        "tier": tier,
        "max_abs_err": float(np.max(np.abs(got64 - want64))) if got64.size else 0.0,
        "rel_err": rel,
        "tolerance": tolerance,
        "ok": bool(rel <= tolerance),
    }


def _ensure_tuned(settings: BenchSettings, problem: Problem, arch: str) -> str:
    """Tune `problem` into the bench's cache unless it is there; keep the trial records."""
    result = run_job(
        TuneRequest(
            problem=problem,
            arch=arch,
            trials=settings.trials,
            seed=settings.seed,
            cache_dir=settings.kernel_cache,
            progress=False,
        )
    )
    if result.records:
        write_trials(settings.out_dir / TRIALS_NAME, result.kernel_key, result.records)
    return "cached" if result.cache_hit else f"tuned ({result.trials_run} trials)"


def _warm_up(
    settings: BenchSettings,
    problem: Problem,
    inputs: tuple[np.ndarray, ...],
    summary: dict[str, Any],
) -> list[int]:
    """Build and run each tier `warmup` times, untraced; check tiers 2 and 3 against tier 1.

    Returns the tiers that served as asked (a tier that fell back is listed as skipped)."""
    served_tiers, reference = [], None
    for tier in settings.tiers:
        with Runtime(config=_tier_config(settings, tier, None)) as warm:
            for _ in range(settings.warmup):
                out = _call(warm, problem, inputs)
            served = warm.history()[-1].tier
        if served != tier:
            summary["skipped"].append(f"{_label(problem)}: tier {tier} served tier {served}")
            continue
        served_tiers.append(tier)
        if tier == 1:
            reference = out
        elif reference is not None:
            summary["consistency"].append(_consistency(problem, tier, out, reference))
    return served_tiers


def _timed(
    settings: BenchSettings,
    problem: Problem,
    inputs: tuple[np.ndarray, ...],
    tiers: Sequence[int],
    trace: Path,
) -> dict[int, list[float]]:
    """`repeats` traced calls per tier, interleaved (the starting tier rotates each round) so
    a burst of load on a shared machine slows every tier alike rather than one tier's block."""
    with contextlib.ExitStack() as stack:
        runtimes = {
            tier: stack.enter_context(Runtime(config=_tier_config(settings, tier, trace)))
            for tier in tiers
        }
        for round_index in range(settings.repeats):
            shift = round_index % len(tiers)
            for tier in [*tiers[shift:], *tiers[:shift]]:
                _call(runtimes[tier], problem, inputs)
        return {
            tier: [r.wall_ms for r in rt.history() if r.event == "call"]
            for tier, rt in runtimes.items()
        }


def run_bench(settings: BenchSettings, *, log: Any = print) -> dict[str, Any]:
    """Run every set through the tiers; write the trace, trials and summary; return the summary."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    trace = settings.out_dir / TRACE_NAME
    for stale in (trace, settings.out_dir / TRIALS_NAME):
        stale.unlink(missing_ok=True)  # one bench run per trace: the report reads it whole
    with Runtime(config=_tier_config(settings, 1, None)) as probe:
        device, arch = probe.device, probe.arch
    summary: dict[str, Any] = {
        "device": device,
        "arch": arch,
        "scale": settings.scale,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "trace": TRACE_NAME,
        "trials": TRIALS_NAME,
        "sets": {},
        "consistency": [],
        "skipped": [],
    }
    for set_name in settings.sets:
        problems = SETS[settings.scale][set_name]
        summary["sets"][set_name] = [_label(p) for p in problems]
        for index, problem in enumerate(problems):
            if 3 in settings.tiers:
                log(f"{set_name}: {_label(problem)}: {_ensure_tuned(settings, problem, arch)}")
            inputs = _inputs(problem, settings.seed + index)
            tiers = _warm_up(settings, problem, inputs, summary)
            times = _timed(settings, problem, inputs, tiers, trace)
            for tier, samples in times.items():
                log(
                    f"{set_name}: {_label(problem)}: tier {tier} median {np.median(samples):.4g} ms"
                )
    (settings.out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m runtime.bench",
        description="Run the standard configuration sets (small, medium, large, variable "
        "length, mixed precision) through the runtime's tiers and write a trace for "
        "python -m autotune.report.",
    )
    parser.add_argument("--out", type=Path, default=Path("bench"), help="output dir (./bench)")
    parser.add_argument(
        "--device",
        choices=("emulator", "cuda", "auto"),
        default="emulator",
        help="emulator (CPU, reduced sizes) or cuda (GPU, full sizes); default emulator",
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), help="target arch (default: device's)")
    parser.add_argument("--quick", action="store_true", help="CI-sized problems: seconds")
    parser.add_argument(
        "--full", action="store_true", help="full sizes even on the emulator (slow)"
    )
    parser.add_argument(
        "--sets",
        default=",".join(SET_NAMES),
        help=f"comma-separated subset of {', '.join(SET_NAMES)} (default all)",
    )
    parser.add_argument("--tiers", default="1,2,3", help="comma-separated tiers (default 1,2,3)")
    parser.add_argument("--warmup", type=int_at_least(1), default=2, help="warm-up calls (2)")
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=None,
        help="timed calls per tier (quick 5, emulator 10, GPU 20)",
    )
    parser.add_argument(
        "--trials",
        type=int_at_least(1),
        default=None,
        help="tier-3 tuning trials (quick 2, emulator 6, GPU 24)",
    )
    parser.add_argument("--seed", type=int, default=0, help="input and search seed (0)")
    parser.add_argument("--cache-dir", type=Path, help="kernel cache (default OUT/kernels)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick and args.full:
        parser.error("--quick and --full: choose one scale")
    on_gpu = args.device == "cuda"
    scale = "quick" if args.quick else "full" if (args.full or on_gpu) else "emulator"
    try:
        tiers = tuple(int(t) for t in args.tiers.split(","))
    except ValueError:
        parser.error(f"--tiers {args.tiers!r}: expected comma-separated tiers such as 1,2,3")
    try:
        settings = BenchSettings(
            out_dir=args.out,
            device=args.device,
            arch=args.arch,
            scale=scale,
            sets=tuple(s.strip() for s in args.sets.split(",") if s.strip()),
            tiers=tiers,
            warmup=args.warmup,
            repeats=args.repeats or (5 if args.quick else 20 if on_gpu else 10),
            trials=args.trials or (2 if args.quick else 24 if on_gpu else 6),
            seed=args.seed,
            cache_dir=args.cache_dir,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        summary = run_bench(settings)
    except (TesseraError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = settings.out_dir
    bad = [c for c in summary["consistency"] if not c["ok"]]
    print(f"wrote {out / TRACE_NAME}, {out / SUMMARY_NAME}, {out / TRIALS_NAME}")
    print(
        f"report: python -m autotune.report --bench {out / SUMMARY_NAME} "
        f"--cache {settings.kernel_cache} --out {out / 'report'}"
    )
    if bad:
        print(f"{len(bad)} cross-tier consistency check(s) failed", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m runtime.bench"))
