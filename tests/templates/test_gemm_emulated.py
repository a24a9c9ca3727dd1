"""The gemm template run on the CPU through the host emulator, against float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_runs import REL_TOLERANCE, random, rel_error, run_gemm_emulated

from templates.gemm.reference import gemm_reference
from tessera_core.types import GemmProblem, TileConfig

CASES = [
    # (m, n, k, dtype, config, specialized, element offsets of the a and b bases)
    (100, 72, 40, "fp16", TileConfig(64, 64, 32, 4, 3), False, (0, 0)),  # aligned, ragged M/N/K
    (100, 70, 33, "fp16", TileConfig(64, 64, 32, 4, 3), False, (0, 0)),  # K, N not multiples of 8
    (100, 72, 40, "fp16", TileConfig(64, 64, 32, 4, 2), False, (1, 3)),  # misaligned bases
    (37, 129, 10, "bf16", TileConfig(32, 32, 16, 2, 2), True, (0, 0)),  # K < block_k
    (130, 64, 200, "fp16", TileConfig(128, 128, 32, 4, 3), False, (0, 0)),
    (64, 96, 128, "bf16", TileConfig(128, 64, 64, 8, 4), True, (0, 0)),
    # Interior and edge tiles in grouped order (3 x 3 tiles, one short group), generic and
    # specialized; a non-ragged specialized problem whose misaligned bases force the edge path.
    (67, 72, 192, "fp16", TileConfig(32, 32, 32, 2, 3, options=(("group_m", 4),)), False, (0, 0)),
    (67, 72, 192, "bf16", TileConfig(32, 32, 32, 2, 2, options=(("group_m", 4),)), True, (0, 0)),
    (64, 64, 64, "fp16", TileConfig(32, 32, 32, 2, 2, options=(("group_m", 4),)), True, (1, 0)),
    # The 256-wide tiles: one interior tile plus edges, and a ragged single tile.
    (256, 136, 64, "bf16", TileConfig(256, 128, 32, 8, 3), True, (0, 0)),
    (100, 300, 40, "fp16", TileConfig(128, 256, 16, 8, 2), False, (0, 0)),
]


@pytest.mark.parametrize(
    "m,n,k,dtype,config,specialized,offsets",
    CASES,
    ids=[f"{c[0]}x{c[1]}x{c[2]}-{c[3]}-{c[4]}-{c[5]}-off{c[6][0]}{c[6][1]}" for c in CASES],
)
def test_emulated_gemm_matches_float64_reference(
    m: int,
    n: int,
    k: int,
    dtype: str,
    config: TileConfig,
    specialized: bool,
    offsets: tuple[int, int],
) -> None:
    problem = GemmProblem(m, n, k, dtype=dtype)  # type: ignore[arg-type]
    rng = np.random.default_rng(m * n + k)
    a_store = random(rng, (m * k + 8,), dtype)
    b_store = random(rng, (k * n + 8,), dtype)
    a = a_store[offsets[0] : offsets[0] + m * k].reshape(m, k)
    b = b_store[offsets[1] : offsets[1] + k * n].reshape(k, n)

    c = run_gemm_emulated(problem, config, a, b, specialized=specialized)

    assert rel_error(c, gemm_reference(a, b, accum_dtype=np.float64)) < REL_TOLERANCE[dtype]
