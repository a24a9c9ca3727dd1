"""Runtime benchmarks: dispatcher overhead on a tier-3 hit, kernel loads, tier 1 vs PyTorch SDPA.

Run: `python -m pytest benchmarks/bench_runtime.py --benchmark-only`. Numbers are reported,
never asserted (the issue's aim: at most 5 µs median dispatcher overhead per call).

Groups: `compile-vs-load` (with bench_compile's cold compile of the same attention kernel:
load_specialized from the memo and in a fresh process), `dispatch`, and `attention-cpu ...`
(tier 1 beside torch's CPU SDPA on the same shape, when torch is installed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))

from fresh_process import bench_fresh_process
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

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Any = ()
    ) -> tuple[Any, Any]:
        return self._out, None


class _NoOpBackends(FakeBackends):
    def __init__(self, out: Any) -> None:
        super().__init__()
        self._out = out

    def specialized(self, problem: Any) -> Any:
        return _NoOpKernel(problem.kernel_key(self.arch), self._out)


@pytest.mark.benchmark(group="dispatch")
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


ROOT = Path(__file__).resolve().parents[1]
LOAD_ARCH = "sm_90"
# bench_compile's attention problem: the loads below read the kernel it compiles cold.
LOAD_PROBLEM = AttentionProblem(4, 16, 2048, 2048, 64)


@pytest.fixture(scope="module")
def compiled_entry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cache holding the real NVRTC-compiled default attention kernel (cubin and PTX)."""
    from generator.compile import compile_kernel
    from generator.render import render

    family = get_family("attention")
    config = family.default_config(LOAD_PROBLEM, LOAD_ARCH)
    try:
        compiled = compile_kernel(
            render(family, LOAD_PROBLEM, config, arch=LOAD_ARCH), arch=LOAD_ARCH
        )
    except Exception as exc:  # NVRTC unavailable on this machine
        pytest.skip(f"cannot compile the kernel to load: {exc}")
    root = tmp_path_factory.mktemp("kernels")
    key = LOAD_PROBLEM.kernel_key(LOAD_ARCH)
    KernelCache(cache_dir=root, read_only_dirs=()).put(
        key,
        cubin=compiled.cubin,
        ptx=compiled.ptx,
        metadata={
            "arch": LOAD_ARCH,
            "problem": LOAD_PROBLEM.to_dict(),
            "config": config.to_dict(),
            "template_hash": template_hash(family),
            "resources": compiled.resources.to_dict(),
        },
    )
    return root, key


@pytest.mark.benchmark(group="compile-vs-load")
def test_load_specialized_memo_hit(benchmark: Any, compiled_entry: tuple[Path, str]) -> None:
    root, key = compiled_entry
    dirs = [root]
    load_specialized(key, cache_dirs=dirs)
    result = benchmark(load_specialized, key, cache_dirs=dirs)
    assert result.kernel_key == key


_LOAD_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from runtime import load_specialized
t1 = time.perf_counter()
kernel = load_specialized(sys.argv[2], cache_dirs=[sys.argv[1]])
t2 = time.perf_counter()
assert kernel.cubin
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3}))
"""


@pytest.mark.benchmark(group="compile-vs-load")
def test_load_specialized_fresh_process(benchmark: Any, compiled_entry: tuple[Path, str]) -> None:
    """A whole interpreter per round; extra_info splits the import from the load itself."""
    root, key = compiled_entry
    bench_fresh_process(
        benchmark, _LOAD_CHILD, [str(root), key], rounds=5, fields=("import_ms", "load_ms")
    )


@pytest.mark.parametrize("seq", [512, 2048])
def test_tier1_attention(benchmark: Any, seq: int) -> None:
    from templates.attention.reference import attention_reference

    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 8, seq, 64)).astype(np.float16) for _ in range(3))
    benchmark.group = f"attention-cpu 1x8x{seq}x64 fp16"
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
    benchmark.group = f"attention-cpu 1x8x{seq}x64 fp16"
    benchmark.pedantic(sdpa, args=(q, k, v), rounds=3, iterations=1)
