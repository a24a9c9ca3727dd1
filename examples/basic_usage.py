"""The seed's basic-usage loop: 100 attention calls through the tiered runtime on the host emulator.

Stats are printed every 10 calls; the signature moves from tier 1 (NumPy reference) to tier 2
(generic kernel) after a few calls, and to tier 3 once the background tuning job it triggered
has put a specialized kernel in the cache. Run: `python examples/basic_usage.py`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Runnable from a checkout without `pip install -e .`: the packages live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune.hotspots import report
from runtime import Runtime, RuntimeConfig
from templates.registry import get_family
from tessera_core.cli import ArgumentParser, check_writable_dir, int_at_least, run_cli
from tessera_core.config import default_compile_cache_dir
from tessera_core.errors import NoDeviceError, UsageError
from tessera_core.types import AttentionProblem, parse_shape

PROG = "examples/basic_usage.py"


def _problem(shape: str) -> AttentionProblem:
    """--shape as an attention problem; UsageError naming the expected form otherwise."""
    try:
        if len(shape.split("x")) != 4:
            raise ValueError("expected BxHxSxD, e.g. 1x4x128x64")
        problem = parse_shape("attention", shape)
    except ValueError as exc:
        raise UsageError(f"--shape {shape!r}: {exc}") from None
    assert isinstance(problem, AttentionProblem)
    return problem


def _check_supported(problem: AttentionProblem, shape: str, arch: str) -> None:
    reason = get_family(problem.family).space.unsupported(problem, arch)
    if reason is not None:
        raise UsageError(f"--shape {shape}: not supported on {arch}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int_at_least(1), default=100)
    parser.add_argument(
        "--every", type=int_at_least(1), default=10, help="print stats every N calls"
    )
    parser.add_argument("--device", default="emulator", choices=("emulator", "cpu", "cuda", "auto"))
    parser.add_argument("--shape", default="1x4x128x64", help="BxHxSxD of q, k and v")
    parser.add_argument(
        "--trials", type=int_at_least(1), default=4, help="tuning trials of the tier-3 job"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="kernel cache (default: a fresh temporary one, so tier 3 is earned)",
    )
    parser.add_argument("--trace", type=Path, default=None, help="also write a JSONL trace here")
    args = parser.parse_args(argv)

    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="tessera-example-"))
    check_writable_dir(cache_dir, argument="--cache-dir")
    check_writable_dir(
        default_compile_cache_dir(),
        argument="the compile cache directory (TESSERA_COMPILE_CACHE_DIR)",
    )
    if args.trace is not None:
        try:
            args.trace.open("a").close()
        except OSError as exc:
            raise UsageError(f"--trace {args.trace}: cannot write it ({exc.strerror})") from None
    p = _problem(args.shape)
    config = RuntimeConfig(
        device=args.device,
        tier2_min_calls=3,
        tier3_min_calls=10,
        tuning_trials=args.trials,
        cache_dirs=(cache_dir,),
        trace_path=args.trace,
    )
    start_s = time.perf_counter()
    try:
        rt = Runtime(config=config)
    except NoDeviceError as exc:
        raise UsageError(f"--device {args.device}: {exc}") from None
    with rt:
        _check_supported(p, args.shape, rt.arch)
        rng = np.random.default_rng(0)
        q, k, v = (
            rng.standard_normal((p.batch, p.heads, p.seq_q, p.head_dim)).astype(np.float16)
            for _ in range(3)
        )
        print(f"runtime on {rt.device} ({rt.arch}), cache {cache_dir}")
        for i in range(1, args.calls + 1):
            out = rt.attention(q, k, v, causal=True)
            if i % args.every == 0:
                st = rt.stats()
                counts = " ".join(f"t{t}={st.tiers[t].count:<3d}" for t in (1, 2, 3))
                tier = rt.history()[-1].tier
                print(
                    f"call {i:4d}: tier {tier}  [{counts}]  tuning: {st.tuning.queued} queued, "
                    f"{st.tuning.running} running, {st.tuning.finished} finished, "
                    f"{st.tuning.failed} failed"
                )
        assert np.all(np.isfinite(out.astype(np.float32)))
        print(f"\nafter {args.calls} calls in {time.perf_counter() - start_s:.1f} s:")
        print(rt.stats().summary())
        print("\ntier changes:")
        for record in rt.history():
            if record.event != "call":
                print(
                    f"  {record.event:8s} -> tier {record.tier}  {record.kernel_key or ''}  "
                    f"{record.detail}"
                )
        print()
        print(report(rt.history(), min_count=2, min_time_ms=0.0, top=3))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog=PROG))
