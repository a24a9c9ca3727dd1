"""SASS of compiled kernels: tensor-core MMA fed by ldmatrix and cp.async, as templates intend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generator.compile import CompiledKernel, compile_kernel, compile_source
from generator.compile_cache import CompileCache
from generator.sass import disassemble, instruction_counts, opcode_counts, resource_usage
from tessera_core.types import AttentionProblem, GemmProblem

# HMMA: mma.sync on tensor cores; LDSM: ldmatrix; LDGSTS: cp.async global->shared.
REQUIRED = ("HMMA", "LDSM", "LDGSTS")

SAMPLE_KERNEL = "sass_sample"
SAMPLE_SOURCE = r"""
#include "tessera/intrinsics.cuh"
using namespace tessera;
struct Params { const f16_t* a; f16_t* c; };
TESSERA_KERNEL(sass_sample, Params, 128) {
  f16_t* tile = reinterpret_cast<f16_t*>(dynamic_smem());
  const int t = threadIdx.x;
  cp_async_16(tile + t * 8, p.a + (blockIdx.x * 128 + t) * 8, 16);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t a[4], b[2];
  float acc[4] = {1.f, 2.f, 3.f, 4.f};
  ldmatrix_x4(a[0], a[1], a[2], a[3], tile + (t % 32) * 8);
  ldmatrix_x2_trans(b[0], b[1], tile + (t % 16) * 8);
  mma_m16n8k16<f16_t>(acc, a, b, acc);
  p.c[blockIdx.x * 128 + t] = from_float<f16_t>(acc[0] + acc[1] + acc[2] + acc[3]);
}
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> CompileCache:
    return CompileCache(root=tmp_path_factory.mktemp("compile"))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_sample_kernel_sass_has_mma_ldmatrix_cp_async(arch: str, cache: CompileCache) -> None:
    kernel = compile_source(SAMPLE_SOURCE, kernel_name=SAMPLE_KERNEL, arch=arch, cache=cache)
    sass = disassemble(kernel.cubin)
    assert f"Function : {SAMPLE_KERNEL}" in sass
    counts = instruction_counts(kernel.cubin)
    for mnemonic in REQUIRED:
        assert counts.get(mnemonic, 0) > 0, f"{mnemonic} missing from {arch} SASS: {counts}"
    assert any(op.startswith("HMMA.16816.F32") for op in opcode_counts(sass))


def test_sass_of_code_without_mma_lacks_it(cache: CompileCache) -> None:
    plain = SAMPLE_SOURCE.replace("mma_m16n8k16<f16_t>(acc, a, b, acc);", "acc[0] += a[0];")
    kernel = compile_source(plain, kernel_name=SAMPLE_KERNEL, arch="sm_90", cache=cache)
    assert "HMMA" not in instruction_counts(kernel.cubin)


def test_cuobjdump_registers_agree_with_ptxas_report(cache: CompileCache) -> None:
    kernel = compile_source(SAMPLE_SOURCE, kernel_name=SAMPLE_KERNEL, arch="sm_90", cache=cache)
    assert f"REG:{kernel.resources.registers} " in resource_usage(kernel.cubin)


def _render_family(op: str) -> Any:
    """Each family's default configuration on a small problem, rendered by generator.render."""
    try:
        from generator.render import render
        from templates.registry import get_family

        family = get_family(op)
    except (ImportError, ModuleNotFoundError) as exc:  # the family's template is not in yet
        pytest.skip(f"family {op} not available: {exc}")
    problem = (
        AttentionProblem(1, 2, 256, 256, 64) if op == "attention" else GemmProblem(256, 256, 256)
    )
    if not (Path(__file__).parents[2] / "templates" / family.template_path).is_file():
        pytest.skip(f"template {family.template_path} not written yet")
    return render(family, problem, family.default_config(problem, "sm_90"))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("op", ["attention", "gemm"])
def test_family_kernel_sass_has_mma_ldmatrix_cp_async(
    op: str, arch: str, cache: CompileCache
) -> None:
    kernel = compile_kernel(_render_family(op), arch=arch, cache=cache)
    assert isinstance(kernel, CompiledKernel)
    counts = instruction_counts(kernel.cubin)
    for mnemonic in REQUIRED:
        assert counts.get(mnemonic, 0) > 0, f"{op} on {arch}: {mnemonic} missing: {counts}"
