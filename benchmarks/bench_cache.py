"""Kernel cache benchmarks: memo hit, disk hit, fresh-process hit, put throughput, NVRTC reference.

Run: python -m pytest benchmarks/bench_cache.py --benchmark-only -p no:cacheprovider
(also: bundle import of 16 entries).
Numbers only, no timed assertions. Entries have a realistic size (64 KiB cubin, 192 KiB PTX).
"""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

import pytest
from fresh_process import bench_fresh_process

from cache import KernelCache

ROOT = Path(__file__).resolve().parents[1]
KEY = "attention_fwd.fp16.b4.h16.sq2048.skv2048.d64.causal.sm_90"
CUBIN_BYTES = 64 * 1024
PTX_LINES = 4096
N_WRITERS = 4
PUTS_PER_WRITER = 25


def _payload(seed: int) -> tuple[bytes, str, dict[str, Any]]:
    rng = random.Random(seed)
    cubin = b"\x7fELF" + rng.randbytes(CUBIN_BYTES - 4)
    ptx = "".join(
        f"  mma.sync.aligned.m16n8k16 %r{rng.randrange(255)};\n" for _ in range(PTX_LINES)
    )
    meta = {
        "arch": "sm_90",
        "template_hash": "t" * 64,
        "nvrtc_version": "12.8",
        "problem": {"op": "attention", "batch": 4, "heads": 16},
        "config": {"block_m": 128, "block_n": 64, "block_k": 64, "num_warps": 4, "num_stages": 2},
        "objective": {"kind": "time_ms", "value": 0.42},
    }
    return cubin, ptx, meta


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    cubin, ptx, meta = _payload(0)
    KernelCache(cache_dir=tmp_path, read_only_dirs=()).put(KEY, cubin=cubin, ptx=ptx, metadata=meta)
    return tmp_path


def test_get_from_memo(benchmark: Any, filled: Path) -> None:
    """A memo hit: a dict lookup plus one lstat that revalidates the file (cache/memo.py)."""
    cache = KernelCache(cache_dir=filled, read_only_dirs=())
    assert cache.get(KEY) is not None
    entry = benchmark(cache.get, KEY, arch="sm_90", template_hash="t" * 64)
    assert entry is not None and not entry.use_ptx


def test_get_from_disk(benchmark: Any, filled: Path) -> None:
    """Read + verify both SHA-256s each call (page cache warm), no memo."""
    cache = KernelCache(cache_dir=filled, read_only_dirs=(), memo=False)
    entry = benchmark(cache.get, KEY, arch="sm_90")
    assert entry is not None


_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from cache import KernelCache
t1 = time.perf_counter()
cache = KernelCache(cache_dir=sys.argv[1], read_only_dirs=())
entry = cache.get(sys.argv[2], arch="sm_90")
t2 = time.perf_counter()
assert entry is not None
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "first_get_ms": (t2 - t1) * 1e3}))
"""


def test_get_in_a_fresh_process(benchmark: Any, filled: Path) -> None:
    """Whole interpreter per round; extra_info holds the in-child import and first-get times."""
    bench_fresh_process(
        benchmark, _CHILD, [str(filled), KEY], rounds=10, fields=("import_ms", "first_get_ms")
    )


def _writer(task: tuple[str, int]) -> float:
    cache_dir, worker = task
    cache = KernelCache(cache_dir=cache_dir, read_only_dirs=(), memo=False)
    cubin, ptx, meta = _payload(worker)
    start = time.perf_counter()
    for i in range(PUTS_PER_WRITER):
        cache.put(f"gemm.fp16.m{worker}.n{i}.k64.sm_90", cubin=cubin, ptx=ptx, metadata=meta)
    return time.perf_counter() - start


def test_put_throughput_several_writers(benchmark: Any, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    rounds: list[float] = []
    with ctx.Pool(N_WRITERS) as pool:
        pool.map(_writer, [(str(tmp_path / "warm"), w) for w in range(N_WRITERS)])

        def run() -> None:
            target = tmp_path / f"r{len(rounds)}"
            start = time.perf_counter()
            pool.map(_writer, [(str(target), w) for w in range(N_WRITERS)])
            rounds.append(time.perf_counter() - start)

        benchmark.pedantic(run, rounds=3, iterations=1)
    total_puts = N_WRITERS * PUTS_PER_WRITER
    benchmark.extra_info["writers"] = N_WRITERS
    benchmark.extra_info["puts_per_round"] = total_puts
    benchmark.extra_info["puts_per_s_best"] = round(total_puts / min(rounds), 1)


N_BUNDLE_ENTRIES = 16


def test_bundle_import(benchmark: Any, tmp_path: Path) -> None:
    """Import of a 16-entry bundle (realistic entries): streamed, verified, staged, published."""
    from cache import export_bundle, import_bundle

    src = KernelCache(cache_dir=tmp_path / "src", read_only_dirs=())
    for i in range(N_BUNDLE_ENTRIES):
        cubin, ptx, meta = _payload(i)
        src.put(f"gemm.fp16.m{i + 1}.n64.k64.sm_90", cubin=cubin, ptx=ptx, metadata=meta)
    bundle = tmp_path / "b.tar.gz"
    export_bundle(src, bundle)
    rounds = iter(range(1_000_000))

    def run() -> None:
        target = KernelCache(cache_dir=tmp_path / f"dst{next(rounds)}", read_only_dirs=())
        assert len(import_bundle(bundle, target).imported) == N_BUNDLE_ENTRIES

    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["entries"] = N_BUNDLE_ENTRIES
    benchmark.extra_info["bundle_bytes"] = bundle.stat().st_size


_NVRTC_SOURCE = r"""
extern "C" __global__ void saxpy_tile(float a, const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    #pragma unroll 8
    for (int k = 0; k < 8; ++k) {
        int j = i * 8 + k;
        if (j < n) y[j] = a * x[j] + y[j];
    }
}
"""


def test_nvrtc_compile_reference(benchmark: Any) -> None:
    """A tiny kernel through NVRTC: a lower bound on what a cache hit saves."""
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")

    def compile_once() -> int:
        err, prog = nvrtc.nvrtcCreateProgram(_NVRTC_SOURCE.encode(), b"k.cu", 0, [], [])
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
        (err,) = nvrtc.nvrtcCompileProgram(prog, 1, [b"--gpu-architecture=sm_90"])
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        nvrtc.nvrtcDestroyProgram(prog)
        return int(size)

    try:
        compile_once()
    except (RuntimeError, AssertionError) as exc:  # NVRTC library not loadable here
        pytest.skip(f"NVRTC unavailable: {exc}")
    assert benchmark.pedantic(compile_once, rounds=5, iterations=1) > 0
