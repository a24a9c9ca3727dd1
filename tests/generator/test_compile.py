"""NVRTC compilation: cubin, PTX and resources per arch, error logs, the cache, parallelism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from generator import compile as compile_module
from generator import toolchain
from generator.compile import CompiledKernel, compile_kernel, compile_many, compile_source
from generator.compile_cache import CompileCache
from generator.gpu import GpuProbe
from tessera_core.errors import CompileError
from tessera_core.types import GemmProblem, TileConfig

ELF_MAGIC = b"\x7fELF"

# A small kernel through the intrinsics header: tensor-core MMA fed by ldmatrix and cp.async,
# its Params struct passed by value, as every family's kernel is.
SAMPLE_SOURCE = r"""
#include "tessera/intrinsics.cuh"
using namespace tessera;
struct Params { const f16_t* a; f16_t* c; int k_tiles; };
constexpr int THREADS = 128, TILE = THREADS * 8;
TESSERA_KERNEL(sample_mma, Params, THREADS) {
  f16_t* tile = reinterpret_cast<f16_t*>(dynamic_smem());
  const int t = threadIdx.x, lane = t % 32;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int kt = 0; kt < p.k_tiles; ++kt) {
    cp_async_16(tile + t * 8, p.a + (kt * THREADS + t) * 8, 16);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t a[4], b[2];
    ldmatrix_x4(a[0], a[1], a[2], a[3], tile + (lane % 16) * 32);
    ldmatrix_x2_trans(b[0], b[1], tile + (lane % 16) * 32 + 16);
    mma_m16n8k16<f16_t>(acc, a, b, acc);
    __syncthreads();
  }
  p.c[blockIdx.x * THREADS + t] = from_float<f16_t>(acc[0] * {variant}.0f + shfl_xor(acc[3], 1));
}
"""
SAMPLE_KERNEL = "sample_mma"


def sample_source(variant: int = 1) -> str:
    """The sample kernel; each variant scales its output differently, so binaries differ."""
    return SAMPLE_SOURCE.replace("{variant}", str(variant))


@dataclasses.dataclass(frozen=True)
class FakeRendered:
    """Stands in for generator.render.RenderedKernel: what compile reads of it."""

    source: str
    kernel_name: str = SAMPLE_KERNEL
    family: str = "gemm"
    problem: GemmProblem = dataclasses.field(default_factory=lambda: GemmProblem(128, 128, 64))
    config: TileConfig = dataclasses.field(default_factory=lambda: TileConfig(64, 64, 32, 4, 2))


@pytest.fixture
def cache(tmp_path: Path) -> CompileCache:
    return CompileCache(root=tmp_path / "compile")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_compile_yields_cubin_ptx_and_resources_for_arch(arch: str, cache: CompileCache) -> None:
    kernel = compile_source(sample_source(), kernel_name=SAMPLE_KERNEL, arch=arch, cache=cache)
    assert kernel.cubin.startswith(ELF_MAGIC)
    assert f".target {arch}" in kernel.ptx
    assert ".entry sample_mma" in kernel.ptx
    assert f"-arch={arch}" in kernel.options
    assert f"for '{arch}'" in kernel.log
    assert 0 < kernel.resources.registers <= 255
    assert kernel.resources.spill_bytes == 0
    assert kernel.arch == arch
    assert kernel.nvrtc_version == toolchain.nvrtc_version()
    assert not kernel.cache_hit


def test_archs_give_different_binaries(cache: CompileCache) -> None:
    sm80 = compile_source(sample_source(), kernel_name=SAMPLE_KERNEL, arch="sm_80", cache=cache)
    sm90 = compile_source(sample_source(), kernel_name=SAMPLE_KERNEL, arch="sm_90", cache=cache)
    assert sm80.cache_key != sm90.cache_key
    assert sm80.cubin != sm90.cubin


def test_unsupported_arch_is_refused(cache: CompileCache) -> None:
    with pytest.raises(ValueError, match="sm_75"):
        compile_source(sample_source(), kernel_name=SAMPLE_KERNEL, arch="sm_75", cache=cache)


def test_second_compile_is_a_cache_hit_without_nvrtc(
    cache: CompileCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = compile_source(sample_source(), kernel_name=SAMPLE_KERNEL, arch="sm_90", cache=cache)

    def no_nvrtc(*args: object, **kwargs: object) -> None:
        raise AssertionError("NVRTC ran for a source already in the compile cache")

    monkeypatch.setattr(compile_module, "run_nvrtc", no_nvrtc)
    second = compile_source(sample_source(), kernel_name=SAMPLE_KERNEL, arch="sm_90", cache=cache)
    assert second.cache_hit and not first.cache_hit
    assert second.cubin == first.cubin
    assert second.ptx == first.ptx
    assert second.resources == first.resources
    assert second.log == first.log


def test_compile_error_carries_log_options_and_config(cache: CompileCache) -> None:
    broken = sample_source().replace("shfl_xor(acc[3], 1)", "undeclared_thing")
    with pytest.raises(CompileError) as info:
        compile_kernel(FakeRendered(broken), arch="sm_90", cache=cache)
    error = info.value
    assert "undeclared_thing" in error.log
    assert "error" in error.log
    assert "-arch=sm_90" in error.options
    assert error.config is not None
    assert error.config["block_m"] == 64
    assert error.config["family"] == "gemm"
    assert error.config["problem"]["m"] == 128
    assert "undeclared_thing" in str(error)  # the message shows the log too


def test_compile_kernel_reads_a_rendered_kernel(cache: CompileCache) -> None:
    kernel = compile_kernel(FakeRendered(sample_source(2)), arch="sm_80", cache=cache)
    assert isinstance(kernel, CompiledKernel)
    assert kernel.kernel_name == SAMPLE_KERNEL


def test_compile_many_keeps_order_returns_errors_and_dedupes(cache: CompileCache) -> None:
    good_a = FakeRendered(sample_source(3))
    bad = FakeRendered(sample_source(5).replace("cp_async_commit();", "cp_async_commit()"))
    good_b = FakeRendered(sample_source(4))
    results = compile_many(
        [good_a, bad, good_b, good_a], arch="sm_90", jobs=2, cache=cache, executor="thread"
    )
    expected = [CompiledKernel, CompileError, CompiledKernel, CompiledKernel]
    assert [type(r) for r in results] == expected
    a0, error, b, a1 = results
    assert isinstance(a0, CompiledKernel) and isinstance(b, CompiledKernel)
    assert isinstance(a1, CompiledKernel) and isinstance(error, CompileError)
    assert a0.cubin == a1.cubin and a0.cubin != b.cubin
    assert "-arch=sm_90" in error.options and error.log
    # The duplicate compiled once; the failure is recorded too.
    assert len(list(cache.root.rglob("*.json"))) == 3
    again = compile_many([good_b, bad, good_a], arch="sm_90", jobs=2, cache=cache)
    assert isinstance(again[0], CompiledKernel) and again[0].cache_hit
    assert isinstance(again[1], CompileError) and "cached failure" in str(again[1])
    assert again[1].log == error.log
    assert isinstance(again[2], CompiledKernel) and again[2].cache_hit


def test_compile_many_in_worker_processes(cache: CompileCache) -> None:
    rendereds = [FakeRendered(sample_source(6 + i)) for i in range(2)]
    rendereds.append(FakeRendered(sample_source(8).replace("int k_tiles;", "")))
    results = compile_many(rendereds, arch="sm_80", jobs=2, cache=cache, executor="process")
    assert isinstance(results[0], CompiledKernel) and isinstance(results[1], CompiledKernel)
    assert results[0].cubin.startswith(ELF_MAGIC) and results[0].cubin != results[1].cubin
    assert isinstance(results[2], CompileError) and "k_tiles" in results[2].log


def test_worker_processes_are_reused_across_batches(cache: CompileCache) -> None:
    """A tuner compiles batch after batch; the workers are spawned once, not per batch."""

    def worker_pids() -> set[int]:
        pool = compile_module._pools[("process", 2)]
        return set(pool._processes)  # type: ignore[attr-defined]

    first = compile_many(
        [FakeRendered(sample_source(v)) for v in (11, 12)], arch="sm_80", jobs=2, cache=cache
    )
    pids = worker_pids()
    second = compile_many(
        [FakeRendered(sample_source(v)) for v in (13, 14)], arch="sm_80", jobs=2, cache=cache
    )
    assert all(isinstance(r, CompiledKernel) and not r.cache_hit for r in (*first, *second))
    assert worker_pids() == pids and pids


def _fake_probe(monkeypatch: pytest.MonkeyPatch, probe: GpuProbe) -> None:
    import generator.gpu

    monkeypatch.setattr(generator.gpu, "probe", lambda: probe)


@pytest.mark.parametrize(
    ("gpu_arch", "expected"),
    # An sm_90 device targets sm_90a (the Hopper families); an sm_100 one clamps to plain sm_90,
    # since arch-specific sm_90a cubins run on compute capability 9.0 only.
    [("sm_86", "sm_86"), ("sm_90", "sm_90a"), ("sm_87", "sm_86"), ("sm_100", "sm_90")],
)
def test_default_arch_follows_the_gpu_clamped(
    gpu_arch: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_probe(monkeypatch, GpuProbe(1, gpu_arch, "ok"))
    monkeypatch.setenv("TESSERA_ARCH", "sm_80")  # the GPU wins over the knob
    assert toolchain.default_arch() == expected


def test_default_arch_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_probe(monkeypatch, GpuProbe(0, None, "no driver"))
    monkeypatch.delenv("TESSERA_ARCH", raising=False)
    assert toolchain.default_arch() == "sm_90"
    monkeypatch.setenv("TESSERA_ARCH", "sm_89")
    assert toolchain.default_arch() == "sm_89"
    monkeypatch.setenv("TESSERA_ARCH", "sm_70")
    with pytest.raises(ValueError, match="TESSERA_ARCH"):
        toolchain.default_arch()


def test_toolchain_is_found_by_pathfinder() -> None:
    tessera_dir, cuda_dir = toolchain.include_dirs()
    assert (Path(tessera_dir) / "tessera" / "intrinsics.cuh").is_file()
    assert (Path(cuda_dir) / "cuda_fp16.h").is_file()
    assert Path(toolchain.cuobjdump_path()).is_file()
    assert Path(toolchain.nvdisasm_path()).is_file()
    major, minor = toolchain.nvrtc_version().split(".")
    assert int(major) >= 12 and int(minor) >= 0


def test_failed_source_is_not_compiled_again(
    cache: CompileCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = sample_source(9).replace(
        "__syncthreads();\n    uint32_t", "syncthreads_typo();\n    uint32_t"
    )
    with pytest.raises(CompileError) as first:
        compile_source(broken, kernel_name=SAMPLE_KERNEL, arch="sm_90", cache=cache)

    def no_nvrtc(*args: object, **kwargs: object) -> None:
        raise AssertionError("NVRTC ran again for a source it already rejected")

    monkeypatch.setattr(compile_module, "run_nvrtc", no_nvrtc)
    with pytest.raises(CompileError, match="cached failure") as second:
        compile_source(broken, kernel_name=SAMPLE_KERNEL, arch="sm_90", cache=cache)
    assert "syncthreads_typo" in first.value.log
    assert second.value.log == first.value.log
    assert second.value.options == first.value.options


def test_status_checker_returns_values_and_raises_with_what_to_do() -> None:
    from cuda.bindings import nvrtc

    from tessera_core.errors import CudaError

    ok, bad = nvrtc.nvrtcResult.NVRTC_SUCCESS, nvrtc.nvrtcResult.NVRTC_ERROR_INVALID_OPTION
    assert toolchain.check((ok,), call="f") is None
    assert toolchain.check((ok, 7), call="f") == 7
    assert toolchain.check((ok, 13, 5), call="f") == (13, 5)
    with pytest.raises(CudaError, match="nvrtcThing failed with NVRTC_ERROR_INVALID_OPTION; fix"):
        toolchain.check((bad,), call="nvrtcThing", hint="fix the options")
    with pytest.raises(CompileError, match="INVALID_OPTION") as info:
        toolchain.check(bad, call="c", error=lambda m: CompileError(m, log="LOG", options=["-x"]))
    assert info.value.log == "LOG"
