"""Runtime benchmarks: dispatcher overhead on a tier-3 hit, memoized loads, tier-1 attention.

Run: `python -m pytest benchmarks/bench_runtime.py --benchmark-only`. Numbers are reported,
never asserted (the issue's aim: at most 5 µs median dispatcher overhead per call).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))

from runtime_fakes import FakeBackends

from cache.store import KernelCache
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig, load_specialized
from runtime.tiers import Tier
from templates.registry import get_family
from tessera_core.types import AttentionProblem, TileConfig


class _NoOpKernel:
    """A tier-3 kernel that does nothing, so only the dispatcher is timed."""

    tier = Tier.SPECIALIZED
    config = TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)

    def __init__(self, kernel_key: str, out: Any) -> None:
        self.kernel_key = kernel_key
        self._out = out

    def run(self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None) -> tuple[Any, Any]:
        return self._out, None


class _NoOpBackends(FakeBackends):
    def __init__(self, out: Any) -> None:
        super().__init__()
        self._out = out

    def specialized(self, problem: Any) -> Any:
        return _NoOpKernel(problem.kernel_key(self.arch), self._out)


def test_dispatch_overhead_tier3_hit(benchmark: Any) -> None:
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((8, 16, 2048, 64)).astype(np.float16) for _ in range(3))
    rt = Runtime(
        config=RuntimeConfig(tier2=False, tier3_min_calls=0, trace_buffer_records=1000),
        backends=_NoOpBackends(q),
    )
    rt.attention(q, k, v)
    assert rt.history()[-1].tier == 3
    benchmark(rt.attention, q, k, v)
    assert rt.history()[-1].tier == 3


def test_load_specialized_memo_hit(benchmark: Any, tmp_path: Path) -> None:
    problem = AttentionProblem(1, 2, 64, 64, 64)
    key = problem.kernel_key("sm_80")
    config = TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)
    KernelCache(cache_dir=tmp_path).put(
        key,
        cubin=b"placeholder",
        ptx=None,
        metadata={
            "arch": "sm_80",
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "template_hash": template_hash(get_family("attention")),
        },
    )
    dirs = [tmp_path]
    load_specialized(key, cache_dirs=dirs)
    result = benchmark(load_specialized, key, cache_dirs=dirs)
    assert result.config == config


@pytest.mark.parametrize("seq", [512, 2048])
def test_tier1_attention(benchmark: Any, seq: int) -> None:
    from templates.attention.reference import attention_reference

    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 8, seq, 64)).astype(np.float16) for _ in range(3))
    benchmark.extra_info["shape"] = f"1x8x{seq}x64 fp16"
    benchmark.pedantic(attention_reference, args=(q, k, v), rounds=3, iterations=1)


@pytest.mark.parametrize("seq", [512, 2048])
def test_torch_sdpa_cpu(benchmark: Any, seq: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    q, k, v = (
        torch.from_numpy(rng.standard_normal((1, 8, seq, 64)).astype(np.float32)).half()
        for _ in range(3)
    )
    sdpa = torch.nn.functional.scaled_dot_product_attention
    benchmark.extra_info["shape"] = f"1x8x{seq}x64 fp16"
    benchmark.pedantic(sdpa, args=(q, k, v), rounds=3, iterations=1)
