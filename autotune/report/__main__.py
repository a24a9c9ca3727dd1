"""`python -m autotune.report`: performance_report.md and its plots from a cache and a trace."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotune.hotspots import load_trace
from autotune.report.build import ReportInputs, build_report
from autotune.report.inputs import (
    ReportInputError,
    load_bench_summary,
    load_device_report,
    load_trials,
    tuned_entries,
)
from autotune.report.prediction import ModelOracle
from cache.store import KernelCache
from tessera_core.cli import ArgumentParser, run_cli
from tessera_core.config import configure_logging
from tessera_core.errors import TesseraError
from tessera_core.hardware import ARCHS


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m autotune.report",
        description="Write performance_report.md (and PNG plots with matplotlib) from the "
        "kernel cache, a runtime trace and optional measurements.",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        action="append",
        help="runtime trace (JSONL) to analyse; repeat to merge traces",
    )
    parser.add_argument(
        "--cache", type=Path, help="kernel cache directory (default: TESSERA_CACHE_DIR / XDG)"
    )
    parser.add_argument(
        "--device-report", type=Path, help="device report JSON with measured kernel times"
    )
    parser.add_argument(
        "--trials",
        type=Path,
        action="append",
        help="trial records (JSONL) of tuning runs (default: each --bench's own); repeatable",
    )
    parser.add_argument(
        "--bench",
        type=Path,
        action="append",
        help="summary JSON of python -m runtime.bench (brings its trace and trials); repeatable",
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), help="arch for the candidates' model")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="never compile: configs without stored resources get no model time",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="output directory (default ./report)"
    )
    return parser


def _load(args: argparse.Namespace) -> ReportInputs:
    """Read every input the command line names; a bad one raises ReportInputError/OSError."""
    sources = []
    benches = [(path, load_bench_summary(path)) for path in args.bench or []]
    traces = list(args.trace or [])
    trials_files = list(args.trials or [])
    for path, bench in benches:
        sources.append(
            f"bench summary `{path}` (device {bench.get('device')}, {bench.get('scale')} sizes)"
        )
        if not args.trace and bench.get("trace"):
            traces.append(path.parent / str(bench["trace"]))  # the bench's own trace
        own_trials = path.parent / str(bench.get("trials", ""))
        if not args.trials and bench.get("trials") and own_trials.is_file():
            trials_files.append(own_trials)
    records = []
    for trace in traces:
        loaded = load_trace(trace)
        records += loaded
        sources.append(f"trace `{trace}` ({len(loaded)} records)")
    if args.cache is not None and not args.cache.is_dir():
        raise ReportInputError(f"--cache {args.cache}: not a directory; pass a kernel cache")
    # Read-only: a report never creates, touches or evicts cache entries.
    cache = KernelCache(
        cache_dir=args.cache, read_only_dirs=None if args.cache is None else (), writable=False
    )
    entries, skipped = tuned_entries(cache.entries())
    layers = ", ".join(f"`{p}`" for p in cache.search_path.read_only) or "none"
    sources.append(f"kernel cache {layers} ({len(entries)} tuned entries)")
    measurements = load_device_report(args.device_report) if args.device_report else []
    if args.device_report:
        sources.append(f"device report `{args.device_report}` ({len(measurements)} timings)")
    trials: dict[str, list[dict[str, Any]]] = {}
    for path in trials_files:
        runs = load_trials(path)
        trials.update(runs)
        sources.append(f"trials `{path}` ({len(runs)} tuning runs)")
    merged = None
    if benches:
        merged = dict(benches[0][1])
        merged["consistency"] = [c for _, b in benches for c in b.get("consistency", [])]
    return ReportInputs(
        entries=entries,
        skipped=skipped,
        records=records,
        trace_name=", ".join(str(t) for t in traces) or None,
        trials=trials,
        measurements=measurements,
        bench=merged,
        sources=sources,
        arch=args.arch,
    )


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = _parser().parse_args(argv)
    try:
        inputs = _load(args)
        report = build_report(inputs, args.out, oracle=ModelOracle(compile=not args.no_compile))
    except (OSError, ReportInputError, TesseraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report.path}")
    for path in report.plots:
        print(f"wrote {path}")
    if not report.plots_available:
        print("matplotlib is not installed: text only (pip install 'tessera-autotune[plots]')")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m autotune.report"))
