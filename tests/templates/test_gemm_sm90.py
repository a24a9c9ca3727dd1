"""gemm_sm90 (TMA + wgmma, warp-specialized) for sm_90a: space, NVRTC/SASS, emulator, defects.

Every valid configuration compiles for sm_90a with no spills into SASS holding HGMMA, UTMALDG and
SYNCS, and runs on the emulator at a ragged shape against float64 under both schedules (which
run_rendered requires to agree bit for bit). Planted defects in the pipeline must be caught.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from generator import emulator, verify
from generator.compile import CompiledKernel, compile_many
from generator.compile_cache import CompileCache
from generator.render import RenderedKernel, render
from generator.sass import instruction_counts
from templates.gemm_sm90 import space
from templates.registry import get_family
from templates.tma import TensorMap2D
from tessera_core.errors import EmulatorError, InvalidConfigError
from tessera_core.types import GemmProblem, TileConfig

ARCH = "sm_90a"
FAMILY = get_family("gemm_sm90")
# Ragged: M is not a multiple of any block_m, N and K (multiples of 8, as TMA needs) are not
# multiples of 64, so the last row, column and k tiles hang over and are zero-filled.
RAGGED = GemmProblem(200, 136, 264)
CONFIG = TileConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=2)


def valid_configs(problem: GemmProblem) -> list[TileConfig]:
    return FAMILY.space.valid_configs(problem, ARCH)


def test_space_keeps_only_sm90a_and_tma_aligned_problems() -> None:
    assert len(valid_configs(RAGGED)) == 39
    assert FAMILY.space.violations(CONFIG, RAGGED, "sm_90") == [
        "sm_90a: gemm_sm90 runs on sm_90a only (wgmma, setmaxnreg), not sm_90"
    ]
    reasons = FAMILY.space.violations(CONFIG, GemmProblem(200, 130, 264), ARCH)
    assert reasons and "N=130, K=264: TMA needs rows of a multiple of 16 bytes" in reasons[0]
    too_many = TileConfig(block_m=128, block_n=256, block_k=64, num_warps=8, num_stages=2)
    assert any(
        "256 accumulator registers" in r for r in FAMILY.space.violations(too_many, RAGGED, ARCH)
    )
    with pytest.raises(InvalidConfigError):
        render(FAMILY, RAGGED, CONFIG, specialized=False, arch="sm_90")


def test_smem_bytes_counts_slack_stages_and_barriers() -> None:
    assert space.smem_bytes(RAGGED, CONFIG) == 1024 + 2 * ((128 + 128) * 128 + 16)
    assert FAMILY.launch_geometry(RAGGED, CONFIG).grid == (4, 1, 1)
    assert FAMILY.launch_geometry(RAGGED, CONFIG).block == (256, 1, 1)


def test_tensor_maps_describe_a_and_b_in_64_by_64_boxes() -> None:
    from templates.gemm_sm90.family import tensor_maps

    map_a, map_b = tensor_maps(RAGGED, 4096, 8192)
    assert map_a == TensorMap2D(4096, 2, 264, 200, 528, 64, 64, "128B")
    assert map_b == TensorMap2D(8192, 2, 136, 264, 272, 64, 64, "128B")
    assert map_a.box_bytes + map_b.box_bytes == 2 * 64 * 128


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[CompiledKernel]:
    rendered = [
        render(FAMILY, RAGGED, config, specialized=False, arch=ARCH)
        for config in valid_configs(RAGGED)
    ]
    cache = CompileCache(root=Path(tmp_path_factory.mktemp("gemm-sm90")))
    results = compile_many(rendered, arch=ARCH, cache=cache, executor="thread")
    for result in results:
        if not isinstance(result, CompiledKernel):
            raise result
    return [r for r in results if isinstance(r, CompiledKernel)]


def test_every_valid_config_compiles_to_hgmma_utmaldg_syncs_without_spills(
    compiled: list[CompiledKernel],
) -> None:
    for kernel in compiled:
        assert kernel.arch == ARCH
        assert kernel.resources.spill_store_bytes == 0, kernel.cache_key
        assert kernel.resources.spill_load_bytes == 0, kernel.cache_key
        counts = instruction_counts(kernel.cubin)
        for opcode in ("HGMMA", "UTMALDG", "SYNCS"):
            assert counts.get(opcode, 0) > 0, (opcode, kernel.cache_key)


def test_bf16_and_specialized_kernels_compile_too(tmp_path: Path) -> None:
    problem = dataclasses.replace(RAGGED, dtype="bf16")
    rendered = [
        render(FAMILY, problem, CONFIG, specialized=True, arch=ARCH),
        render(FAMILY, problem, CONFIG, specialized=False, arch=ARCH),
    ]
    for result in compile_many(rendered, arch=ARCH, cache=CompileCache(root=tmp_path)):
        assert isinstance(result, CompiledKernel)
        assert instruction_counts(result.cubin).get("HGMMA", 0) > 0


def run(rendered: RenderedKernel, problem: GemmProblem, seed: int) -> dict[str, np.ndarray]:
    inputs = verify.random_inputs(problem, seed=seed)
    outputs = {"c": ((problem.m, problem.n), inputs["a"].dtype)}
    result = emulator.run_rendered(rendered, inputs=inputs, outputs=outputs)
    return {"out": result.outputs["c"], **inputs}


def relative_error(problem: GemmProblem, got: dict[str, np.ndarray]) -> float:
    want = got["a"].astype(np.float64) @ got["b"].astype(np.float64)
    return float(np.linalg.norm(got["out"].astype(np.float64) - want) / np.linalg.norm(want))


# fp32 accumulation, one rounding of C to fp16 (2^-11) or bf16 (2^-8): normwise bounds with room.
TOLERANCE = {"fp16": 2e-3, "bf16": 1.6e-2}


# Every 4th valid configuration runs in the default suite; the rest are `slow` (each is a host
# build plus an emulated launch, about 5 s on two cores): `python -m pytest -m slow` runs them.
SWEEP_SAMPLE_EVERY = 4


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(c, marks=() if i % SWEEP_SAMPLE_EVERY == 0 else (pytest.mark.slow,))
        for i, c in enumerate(valid_configs(RAGGED))
    ],
    ids=lambda c: str(c.to_dict()),
)
def test_every_valid_config_matches_float64_at_a_ragged_shape(config: TileConfig) -> None:
    rendered = render(FAMILY, RAGGED, config, specialized=False, arch=ARCH)
    got = run(rendered, RAGGED, seed=11)
    assert not np.isnan(got["out"].astype(np.float32)).any()
    assert relative_error(RAGGED, got) < TOLERANCE["fp16"]


@pytest.mark.parametrize("specialized", [False, True])
def test_bf16_matches_float64(specialized: bool) -> None:
    problem = GemmProblem(72, 200, 136, dtype="bf16")
    rendered = render(FAMILY, problem, CONFIG, specialized=specialized, arch=ARCH)
    assert relative_error(problem, run(rendered, problem, seed=3)) < TOLERANCE["bf16"]


# ---------------------------------------------------------------- planted defects
Mutation = Callable[[str], str]
# Five k tiles through two stages: every stage is refilled, and both barrier phases are used.
DEFECT_PROBLEM = GemmProblem(136, 128, 320)


def replace_once(old: str, new: str) -> Mutation:
    def mutate(source: str) -> str:
        assert source.count(old) == 1, f"anchor {old!r} not unique in the template; update test"
        return source.replace(old, new)

    return mutate


def outcome(mutate: Mutation | None) -> str:
    rendered = render(FAMILY, DEFECT_PROBLEM, CONFIG, specialized=False, arch=ARCH)
    if mutate is not None:
        rendered = dataclasses.replace(rendered, source=mutate(rendered.source))
    try:
        got = run(rendered, DEFECT_PROBLEM, seed=5)
    except EmulatorError as exc:
        return f"emulator: {exc}"
    if np.isnan(got["out"].astype(np.float32)).any():
        return "verifier: NaN in C"
    error = relative_error(DEFECT_PROBLEM, got)
    return "pass" if error < TOLERANCE["fp16"] else f"verifier: relative error {error:.3g}"


def test_the_unmodified_kernel_passes() -> None:
    assert outcome(None) == "pass"


DEFECTS: dict[str, tuple[Mutation, str]] = {
    "wrong-swizzle-mode": (
        replace_once(
            "SWIZZLE_ATOM_BYTES, tessera::SWIZZLE_128B);\n#pragma unroll",
            "SWIZZLE_ATOM_BYTES, tessera::SWIZZLE_64B);\n#pragma unroll",
        ),
        "verifier: relative error|emulator: .*operand B reads shared offset",
    ),
    "missing-wgmma-fence": (
        replace_once("    tessera::wgmma_fence();\n", ""),
        "emulator: .*without a wgmma.fence",
    ),
    "missing-expect-tx": (
        replace_once(
            "tessera::mbarrier_arrive_expect_tx(&full[s], STAGE_BYTES);",
            "tessera::mbarrier_arrive(&full[s]);",
        ),
        "emulator: .*missing mbarrier_arrive_expect_tx|verifier: NaN",
    ),
    "wrong-parity-wait": (
        replace_once(
            "tessera::mbarrier_wait_parity(&full[s], phase);",
            "tessera::mbarrier_wait_parity(&full[s], phase ^ 1);",
        ),
        "verifier: NaN|emulator: ",
    ),
    "consumer-reads-before-its-barrier": (
        replace_once("    tessera::mbarrier_wait_parity(&full[s], phase);\n", ""),
        "verifier: NaN|emulator: ",
    ),
    "producer-overwrites-a-stage-still-read": (
        replace_once(
            "if (kt > 0 && wg_thread == 0) "
            "tessera::mbarrier_arrive(&empty[(kt - 1) % NUM_STAGES]);",
            "if (wg_thread == 0) tessera::mbarrier_arrive(&empty[s]);",
        ),
        "emulator: .*overwrites shared bytes .* that the wgmma issued at line \\d+ still reads",
    ),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_planted_defect_is_caught(defect: str) -> None:
    mutate, expected = DEFECTS[defect]
    result = outcome(mutate)
    assert result != "pass", f"planted defect {defect} went unnoticed"
    assert re.search(expected, result), result


def test_grouped_block_order_covers_every_tile_once() -> None:
    # 11 row blocks: one full group of 8 and a partial group of 3, 3 column blocks.
    problem = GemmProblem(64 * 10 + 37, 136, 64)
    config = TileConfig(block_m=64, block_n=64, block_k=64, num_warps=8, num_stages=2)
    assert FAMILY.launch_geometry(problem, config).grid == (33, 1, 1)
    rendered = render(FAMILY, problem, config, specialized=False, arch=ARCH)
    got = run(rendered, problem, seed=2)
    assert not np.isnan(got["out"].astype(np.float32)).any()  # every tile written
    assert relative_error(problem, got) < TOLERANCE["fp16"]
