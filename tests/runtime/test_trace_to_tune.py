"""A runtime trace goes through hotspots into `generator.tune --from-trace`, whose cache entry a
new runtime then serves at tier 3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from runtime_fakes import FakeBackends, qkv

from runtime import Runtime, RuntimeConfig, load_specialized
from runtime.specialized import clear_memo
from tessera_core.types import AttentionProblem

ROOT = Path(__file__).resolve().parents[2]
ARCH = "sm_80"


def test_trace_round_trips_through_hotspots_into_generator_tune(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    cache = tmp_path / "cache"
    config = RuntimeConfig(trace_path=trace, tier2=False, tier3=False)
    with Runtime(config=config, backends=FakeBackends()) as rt:
        hot = qkv(seq=64, head_dim=64)
        for _ in range(6):
            rt.attention(*hot, causal=True)
        rt.attention(*qkv(seq=16, head_dim=16))
        rt.gemm(np.ones((16, 16), np.float16), np.ones((16, 16), np.float16))

    hot_problem = AttentionProblem(1, 2, 64, 64, 64, causal=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "generator.tune",
            "--from-trace",
            str(trace),
            "--top",
            "1",
            "--trials",
            "2",
            "--jobs",
            "1",
            "--arch",
            ARCH,
            "--cache-dir",
            str(cache),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert hot_problem.kernel_key(ARCH) in result.stdout

    clear_memo()
    loaded = load_specialized(hot_problem.kernel_key(ARCH), cache_dirs=[cache])
    assert loaded.problem == hot_problem
    serving = RuntimeConfig(
        device="emulator",
        arch=ARCH,
        tier2=False,
        tier3_min_calls=0,
        tuning_workers=0,
        cache_dirs=(cache,),
    )
    with Runtime(config=serving) as rt:
        out = rt.attention(*hot, causal=True)
        (record,) = rt.history()[-1:]
    assert record.tier == 3 and record.config == loaded.config.to_dict()
    assert np.all(np.isfinite(out.astype(np.float32)))
