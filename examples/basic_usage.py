"""The seed's basic-usage loop: 100 attention calls through the tiered runtime on the host emulator.

Stats are printed every 10 calls; the signature moves from tier 1 (NumPy reference) to tier 2
(generic kernel) after a few calls, and to tier 3 once the background tuning job it triggered
has put a specialized kernel in the cache. Run: `python examples/basic_usage.py`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Runnable from a checkout without `pip install -e .`: the packages live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune.hotspots import report
from runtime import Runtime, RuntimeConfig
from tessera_core.cli import int_at_least


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

    try:
        b, h, s, d = (int(x) for x in args.shape.split("x"))
    except ValueError:
        parser.error(f"--shape {args.shape!r}: expected BxHxSxD, e.g. 1x4x128x64")
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((b, h, s, d)).astype(np.float16) for _ in range(3))
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="tessera-example-"))
    config = RuntimeConfig(
        device=args.device,
        tier2_min_calls=3,
        tier3_min_calls=10,
        tuning_trials=args.trials,
        cache_dirs=(cache_dir,),
        trace_path=args.trace,
    )
    start_s = time.perf_counter()
    with Runtime(config=config) as rt:
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
    raise SystemExit(main())
