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


# A hand-written listing: a prologue, an outer loop (0x0040..0x00c0) holding an inner loop
# (0x0060..0x00a0) with two HMMA, and a masked tail loop (0x00e0..0x0100) with one.
LOOPS_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0040*/                   IMAD R2, R3, R4, R5 ;
        /*0060*/                   LDSM.16.M88.4 R8, [R2] ;
        /*0070*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0080*/                   HMMA.16816.F32 R16, R8, R14, R16 ;
        /*0090*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*00a0*/               @P0 BRA 0x60 ;
        /*00b0*/                   IADD3 R2, R2, 0x1, RZ ;
        /*00c0*/              @!P1 BRA 0x40 ;
        /*00d0*/                   MUFU.EX2 R3, R3 ;
        /*00e0*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*00f0*/                   ISETP.GE.AND P2, PT, R2, 0x4, PT ;
        /*0100*/               @P2 BRA 0xe0 ;
        /*0110*/                   BRA 0x200 ;
        /*0120*/                   EXIT ;
"""


def test_main_loop_is_the_innermost_backward_branch_with_the_most_hmma():
    from generator.sass import histogram, instructions, main_loop

    loop = main_loop(LOOPS_SASS)
    assert [address for address, _, _ in loop] == [0x60, 0x70, 0x80, 0x90, 0xA0]
    assert histogram(loop) == {"LDSM": 1, "HMMA": 2, "BAR": 1, "BRA": 1}
    assert histogram(instructions(LOOPS_SASS))["HMMA"] == 4
    assert main_loop("        /*0000*/   EXIT ;") == []


def test_loop_counts_are_cached_per_cubin(monkeypatch, tmp_path):
    import generator.sass as sass

    calls = []

    def fake_disassemble(cubin: bytes) -> str:
        calls.append(cubin)
        return LOOPS_SASS

    monkeypatch.setattr(sass, "disassemble", fake_disassemble)
    monkeypatch.setattr(sass, "_counts_memo", {})
    kernel, loop = sass.kernel_and_loop_counts(b"cubin-1", cache_dir=tmp_path)
    assert loop["HMMA"] == 2 and kernel["HMMA"] == 4
    assert sass.kernel_and_loop_counts(b"cubin-1", cache_dir=tmp_path) == (kernel, loop)
    monkeypatch.setattr(sass, "_counts_memo", {})  # a later process: read from the disk
    assert sass.kernel_and_loop_counts(b"cubin-1", cache_dir=tmp_path) == (kernel, loop)
    assert calls == [b"cubin-1"]
    sass.kernel_and_loop_counts(b"cubin-2", cache_dir=tmp_path)
    assert len(calls) == 2


def test_attention_main_loop_holds_its_mmas():
    from generator.render import render
    from generator.sass import histogram, main_loop
    from templates.registry import get_family

    problem = AttentionProblem(1, 2, 256, 256, 64)
    family = get_family(problem.family)
    config = family.default_config(problem, "sm_90")
    compiled = compile_kernel(render(family, problem, config, arch="sm_90"), arch="sm_90")
    loop = histogram(main_loop(disassemble(compiled.cubin)))
    rows_per_warp = config.block_m // config.num_warps
    # One KV iteration a warp: S = Q K^T and O += P V, rows x block_n x head_dim x 2 / 16x8x16.
    assert loop["HMMA"] % (rows_per_warp * config.block_n * 64 // 1024) == 0
    assert loop.get("BAR", 0) >= 1
