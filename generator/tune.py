"""`python -m generator.tune`: tune a problem shape end to end and store the winner in the cache.

This module is a composition root (see docs/ARCHITECTURE.md): it parses the command line into
`autotune.job.TuneRequest` and prints what `autotune.job.run` returns.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from generator import attention_args
from tessera_core.cli import (
    EXIT_FAILURE,
    ArgumentParser,
    check_writable_dir,
    int_at_least,
    number_at_least,
    run_cli,
    seed_int,
)
from tessera_core.config import configure_logging, default_cache_dir, default_compile_cache_dir
from tessera_core.errors import TesseraError, UsageError
from tessera_core.types import DTYPES, OPS, SHAPE_FORMS, Problem, parse_shape

if TYPE_CHECKING:  # at run time main imports the job lazily, like build_parser does
    from autotune.job import JobResult, TuneRequest

EXIT_NO_VALID = 3
PROG = "python -m generator.tune"

EPILOG = """\
examples:
  python -m generator.tune --shape 8x16x2048x64              attention, fp16, non-causal
  python -m generator.tune --shape 8x16x2048x64 --causal --dtype bf16 --arch sm_80
  python -m generator.tune --shape 1x32x4096x128 --gqa 32:8 --window 1024,0 --causal
  python -m generator.tune --shape 1x8x2048x256 --softcap 30 --alibi --layout bshd
  python -m generator.tune --op gemm --shape 4096x4096x4096 --trials 32 --json
  python -m generator.tune --op attention_bwd --shape 8x16x2048x64 --causal  the backward
  python -m generator.tune --from-trace trace.jsonl --top 3   tune the 3 hottest signatures

Without a CUDA GPU of the target arch every time is an analytical estimate labelled `model`;
with one, it is a measured median labelled `measured`. Running the same command again is a
cache hit: the stored result is printed without compiling or searching (--retune forces a search).
"""


def build_parser() -> argparse.ArgumentParser:
    from autotune.job import DEFAULT_TRIALS
    from tessera_core.hardware import ARCHS

    parser = ArgumentParser(
        prog=PROG,
        description="Search the tile space of a kernel for one problem shape, compile the "
        "winner with NVRTC and store it in the kernel cache.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--shape",
        help=f"attention, attention_bwd: {SHAPE_FORMS['attention']}; gemm: {SHAPE_FORMS['gemm']}; "
        f"attention_decode: {SHAPE_FORMS['attention_decode']}, e.g. 8x32x8x1x4096x128x16 "
        "(KV is rounded up to its power-of-two bucket, at least 64; no PAGE: a contiguous cache)",
    )
    target.add_argument(
        "--from-trace",
        type=Path,
        metavar="TRACE.jsonl",
        help="tune the hottest signatures of a runtime trace instead of one --shape",
    )
    parser.add_argument(
        "--top", type=int_at_least(1), default=1, help="with --from-trace: how many"
    )
    parser.add_argument(
        "--op",
        choices=(*OPS, "attention_decode"),
        default="attention",
        help="kernel family (attention_decode: split-KV decoding against a KV cache, tuned per "
        "cache-length bucket; add --causal for several query tokens)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="fp16", help="input dtype")
    parser.add_argument("--causal", action="store_true", help="causal mask (attention)")
    attention_args.add_arguments(parser)
    parser.add_argument(
        "--arch",
        choices=sorted(ARCHS),
        help="target arch (default: the present GPU's, else TESSERA_ARCH, else sm_90)",
    )
    parser.add_argument(
        "--trials",
        type=int_at_least(1),
        default=DEFAULT_TRIALS,
        help=f"configurations to compile and evaluate (default {DEFAULT_TRIALS})",
    )
    parser.add_argument(
        "--timeout",
        type=number_at_least(0, strict=True),
        metavar="S",
        help="stop searching after S seconds",
    )
    parser.add_argument(
        "--jobs", type=int_at_least(1), help="parallel compiles (default: all cores, TESSERA_JOBS)"
    )
    parser.add_argument(
        "--seed", type=seed_int, default=0, help="search seed, 0 to 2**32-1 (default 0)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="writable kernel cache (default: TESSERA_CACHE_DIR, XDG)"
    )
    parser.add_argument("--retune", action="store_true", help="search even on a cache hit")
    parser.add_argument("--json", action="store_true", help="print one JSON object per problem")
    shared = parser.add_argument_group("distributed tuning (one Optuna study, many workers)")
    shared.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage every worker shares: sqlite:///FILE, journal:///PATH or an RDB URL "
        "such as postgresql://USER@HOST/DB; --trials is then the study's total",
    )
    shared.add_argument(
        "--study-name", metavar="NAME", help="study in the storage (default: the kernel_key)"
    )
    shared.add_argument(
        "--workers",
        type=int_at_least(1),
        default=1,
        help="local worker processes on the study (needs --storage; seeds seed..seed+N-1)",
    )
    parser.add_argument(
        "--warm-start",
        type=Path,
        metavar="RECORDS",
        help="start from configurations measured elsewhere (a Kernel Tuner file, CSV, or "
        "tuning records / --json output of another GPU)",
    )
    return parser


def _problems(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Problem]:
    if args.shape is not None:
        try:
            problem = parse_shape(args.op, args.shape, dtype=args.dtype, causal=args.causal)
        except ValueError as exc:
            parser.error(f"--shape {args.shape}: {exc}")
        try:
            return [attention_args.apply(problem, args)]
        except ValueError as exc:
            parser.error(str(exc))
    from autotune.hotspots import load_trace, propose_tasks, rank

    if not args.from_trace.is_file():
        parser.error(f"--from-trace {args.from_trace}: no such file")
    try:
        records = load_trace(args.from_trace)
    except OSError as exc:
        parser.error(f"--from-trace {args.from_trace}: {exc}")
    problems = propose_tasks(rank(records, min_count=1), args.top)
    if not problems:
        parser.error(
            f"--from-trace {args.from_trace}: the trace holds no successful call of an op "
            "with a kernel family to tune (attention, attention_bwd, gemm)"
        )
    return problems


def _check_supported(problems: Sequence[Problem], args: argparse.Namespace) -> None:
    """A shape no configuration can run is refused with its one reason, before any search."""
    from templates.registry import family_for

    for problem in problems:
        family = family_for(problem, args.arch)
        reason = family.space.unsupported(problem, args.arch)
        if reason is not None:
            where = f"--shape {args.shape}" if args.shape else f"--from-trace {args.from_trace}"
            raise UsageError(
                f"{where}: {family.name} {problem.shape_str()} is not supported on "
                f"{args.arch}: {reason}"
            )


def _print_table(result: JobResult) -> None:
    kind = result.objective_kind
    origin = "cache hit" if result.cache_hit else f"tuned in {result.wall_time_s:.1f} s"
    print(f"{result.kernel_key}  [{origin}; times are {kind}]")
    print(
        f"  trials: {result.trials_run} evaluated, {result.n_valid} valid, "
        f"{result.n_failed} failed, {result.n_invalid} rejected before compiling"
    )
    print(
        f"  {'rank':>4} {'block_m':>7} {'block_n':>7} {'block_k':>7} {'warps':>5} {'stages':>6}"
        f" {'time_ms':>9} {'TFLOP/s':>8} {'regs':>5} {'smem_KiB':>8}  objective"
    )
    for i, row in enumerate(result.leaderboard, start=1):
        c = row.config
        regs = "-" if row.registers is None else str(row.registers)
        smem = "-" if row.smem_bytes is None else f"{row.smem_bytes / 1024:.1f}"
        print(
            f"  {i:>4} {c['block_m']:>7} {c['block_n']:>7} {c['block_k']:>7} {c['num_warps']:>5}"
            f" {c['num_stages']:>6} {row.time_ms:>9.4f} {row.tflops:>8.1f} {regs:>5} {smem:>8}"
            f"  {kind}"
        )
    print(f"  stored in {result.cache_dir}")


def _check_shared(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.warm_start is not None and not args.warm_start.is_file():
        parser.error(f"--warm-start {args.warm_start}: no such file")
    if args.storage is None:
        if args.workers > 1 or args.study_name is not None:
            parser.error("--workers and --study-name need --storage URL (e.g. journal:///PATH)")
        return
    from autotune.study import open_storage

    try:
        open_storage(args.storage)
    except ValueError as exc:
        parser.error(str(exc))


def _worker(request: TuneRequest) -> None:
    from autotune.job import run

    run(request)


def _run_workers(request: TuneRequest, workers: int) -> JobResult:
    """Run `workers` processes on one shared study, then serve the stored winner."""
    import dataclasses
    import multiprocessing

    from autotune.job import run
    from autotune.study import open_study

    assert request.storage is not None
    from templates.registry import kernel_key

    open_study(request.storage, request.study_name or kernel_key(request.problem, request.arch))
    context = multiprocessing.get_context("spawn")  # no inherited threads or open connections
    processes = [
        context.Process(
            target=_worker,
            args=(dataclasses.replace(request, seed=request.seed + i, progress=False),),
            name=f"tessera-tune-worker-{i}",
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise TesseraError(f"tune workers failed: {', '.join(failed)}; see their errors above")
    return run(dataclasses.replace(request, retune=False))


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    from autotune.job import TuneRequest, run
    from tessera_core.errors import NoValidConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    _check_shared(args, parser)
    problems = _problems(args, parser)
    if args.arch is None:
        from generator.toolchain import default_arch

        args.arch = default_arch()
    _check_supported(problems, args)
    if args.cache_dir is not None:
        check_writable_dir(args.cache_dir, argument="--cache-dir")
    else:
        check_writable_dir(
            default_cache_dir(), argument="the kernel cache directory (TESSERA_CACHE_DIR)"
        )
    check_writable_dir(
        default_compile_cache_dir(),
        argument="the compile cache directory (TESSERA_COMPILE_CACHE_DIR)",
    )
    status = 0
    for problem in problems:
        try:
            request = TuneRequest(
                problem=problem,
                arch=args.arch,
                trials=args.trials,
                timeout_s=args.timeout,
                jobs=args.jobs,
                seed=args.seed,
                cache_dir=args.cache_dir,
                retune=args.retune,
                progress=not args.json and args.workers == 1,
                storage=args.storage,
                study_name=args.study_name,
                warm_start=args.warm_start,
            )
            result = run(request) if args.workers == 1 else _run_workers(request, args.workers)
        except NoValidConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_NO_VALID
            continue
        except TesseraError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if args.json:
            print(json.dumps(result.to_json_dict(), sort_keys=True))
        else:
            _print_table(result)
    return status


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
