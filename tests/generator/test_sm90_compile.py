"""The Hopper block of the intrinsics header compiles for sm_90a into wgmma, TMA and mbarriers.

NVRTC runs on the CPU: the SASS must hold HGMMA (wgmma), UTMALDG (TMA loads), SYNCS (mbarrier
operations) and USETMAXREG, with no spills; the same header still compiles for sm_80 and sm_90
(the block is compiled only where NVRTC defines __CUDA_ARCH_FEAT_SM90_ALL).
"""

from __future__ import annotations

import pytest

from generator.compile import compile_source
from generator.compile_cache import CompileCache
from generator.sass import instruction_counts
from tessera_core.errors import CompileError

KERNEL = "sm90_sample"
# A producer warpgroup loads two 128B-swizzled tiles with TMA onto one transaction barrier; a
# consumer warpgroup waits for it and runs four wgmma k-steps (A and B K-major, N = 128).
SOURCE = r"""
#include "tessera/intrinsics.cuh"
using namespace tessera;
struct Params { tensor_map_t map_a; tensor_map_t map_b; float* out; };
TESSERA_KERNEL_SM90(sm90_sample, Params, 256) {
  char* smem = align_smem_1024(dynamic_smem());
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + 24576);
  if (threadIdx.x == 0) mbarrier_init(full, 1);
  __syncthreads();
  if (threadIdx.x >= 128) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 128) {
      mbarrier_arrive_expect_tx(full, 8192 + 16384);
      tma_load_2d(smem, &p.map_a, full, 0, blockIdx.x * 64);
      tma_load_2d(smem + 8192, &p.map_b, full, 0, 0);
    }
    return;
  }
  setmaxnreg_inc<232>();
  mbarrier_wait_parity(full, 0);
  float d[64];
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    const uint64_t da = wgmma_descriptor(smem + ks * 32, 16, 1024, SWIZZLE_128B);
    const uint64_t db = wgmma_descriptor(smem + 8192 + ks * 32, 16, 1024, SWIZZLE_128B);
    wgmma_m64k16<bf16_t, 128, 0>(d, da, db, ks > 0);
  }
  wgmma_commit_group();
  wgmma_wait_group<0>();
  for (int i = 0; i < 64; ++i) p.out[(blockIdx.x * 128 + threadIdx.x) * 64 + i] = d[i];
}
"""


@pytest.fixture(scope="module")
def counts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cache = CompileCache(root=tmp_path_factory.mktemp("sm90-compile"))
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch="sm_90a", cache=cache)
    assert compiled.resources.spill_store_bytes == 0
    assert compiled.resources.spill_load_bytes == 0
    return instruction_counts(compiled.cubin)


def test_sm90a_sass_has_wgmma_tma_mbarrier_and_setmaxnreg(counts: dict[str, int]) -> None:
    assert counts.get("HGMMA", 0) == 4  # one per k-step
    assert counts.get("UTMALDG", 0) == 2
    assert counts.get("SYNCS", 0) >= 3  # init, arrive.expect_tx, try_wait
    assert counts.get("USETMAXREG", 0) == 2


def test_hopper_block_is_absent_below_sm90a(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = CompileCache(root=tmp_path_factory.mktemp("sm90-absent"))
    with pytest.raises(CompileError, match=r"TESSERA_KERNEL_SM90|tensor_map_t"):
        compile_source(SOURCE, kernel_name=KERNEL, arch="sm_90", cache=cache)
