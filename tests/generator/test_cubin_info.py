"""Resources read from the cubin itself when NVRTC's ptxas log is empty (NVRTC 13.0 on a
device): the same registers, static shared memory, stack and spills as ptxas reports."""

from __future__ import annotations

import pytest

from generator import cubin_info
from generator.compile import compile_source
from generator.cubin_info import local_memory_bytes, read_resources, resources_from_cubin

ARCHS = ("sm_80", "sm_90")
# 48 live floats under a 32-register cap (256 threads, 8 blocks per SM) spill; the static
# shared buffer is 1200 bytes.
SPILLING = r"""
extern "C" __global__ void __launch_bounds__(256, 8) spilling(float* x, int n) {
  __shared__ float buf[300];
  float acc[48];
#pragma unroll
  for (int i = 0; i < 48; ++i) acc[i] = x[threadIdx.x * 48 + i];
  for (int r = 0; r < n; ++r) {
#pragma unroll
    for (int i = 0; i < 48; ++i) acc[i] = acc[i] * acc[(i + 7) % 48] + x[r * 48 + i];
  }
  buf[threadIdx.x] = acc[0];
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 48; ++i) x[threadIdx.x * 48 + i] = acc[i] + buf[(threadIdx.x + i) % 300];
}
"""
CLEAN = r"""
extern "C" __global__ void clean(float* x) { x[threadIdx.x] *= 2.0f; }
"""


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("source", "name"), [(SPILLING, "spilling"), (CLEAN, "clean")])
def test_an_empty_ptxas_log_reads_the_same_resources_from_the_cubin(
    source: str, name: str, arch: str
) -> None:
    kernel = compile_source(source, kernel_name=name, arch=arch)
    from_log = kernel.resources
    if name == "spilling":
        assert from_log.spill_bytes > 0 and from_log.static_smem_bytes == 1200, from_log
    assert read_resources("", kernel.cubin, name) == from_log


def test_without_sass_the_stack_frame_stands_in_for_the_spills() -> None:
    spilling = compile_source(SPILLING, kernel_name="spilling", arch="sm_90")
    guess = resources_from_cubin(spilling.cubin, "spilling")
    frame = spilling.resources.stack_bytes
    assert (guess.spill_store_bytes, guess.spill_load_bytes, guess.stack_bytes) == (frame,) * 3
    assert guess.registers == spilling.resources.registers
    clean = compile_source(CLEAN, kernel_name="clean", arch="sm_90")
    assert resources_from_cubin(clean.cubin, "clean").spill_bytes == 0


def test_read_resources_falls_back_when_cuobjdump_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = compile_source(SPILLING, kernel_name="spilling", arch="sm_80")

    def missing(cubin: bytes) -> str:
        raise FileNotFoundError("cuobjdump")

    monkeypatch.setattr(cubin_info.sass_tools, "disassemble", missing)
    resources = read_resources("ptxas info    : 0 bytes gmem\n", kernel.cubin, "spilling")
    assert resources.spill_bytes == 2 * kernel.resources.stack_bytes > 0


def test_local_memory_bytes_count_each_access_width() -> None:
    sass = (
        "/*0010*/  STL [R1+0x4], R2 ;\n/*0020*/  STL.64 [R1+0x8], R4 ;\n"
        "/*0030*/  @P0 LDL.LU.128 R8, [R1] ;\n/*0040*/  LDL R3, [R1+0x4] ;\n"
        "/*0050*/  LDS R3, [R2] ;\n"
    )
    assert local_memory_bytes(sass) == (4 + 8, 16 + 4)


def test_a_foreign_entry_or_a_non_elf_image_is_named() -> None:
    kernel = compile_source(CLEAN, kernel_name="clean", arch="sm_80")
    with pytest.raises(ValueError, match=r"'other'.*clean"):
        read_resources("", kernel.cubin, "other")
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF"):
        resources_from_cubin(b"not a cubin", "clean")
    with pytest.raises(ValueError, match="-v"):
        read_resources("", b"", "clean")
