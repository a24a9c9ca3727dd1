"""GEMM layouts NN, NT, TN, TT (A and B each as given or transposed, a compile-time choice of
the one template): every layout on the emulator against float64, kernel keys naming the layout,
shared memory following the stored tiles."""

from __future__ import annotations

import pytest

from generator import verify
from templates.gemm import space
from tessera_core.types import GEMM_LAYOUTS, GemmProblem, TileConfig, problem_from_dict

ARCH = "sm_90"
# Ragged M and N; M = 100 is not a multiple of 8, so a transposed A (rows of M elements) takes
# the scalar fallback while a K-contiguous one (K = 40) takes 16-byte copies, and interior
# tiles exist for the larger tiles' layouts with both operands vectorizable.
SHAPE = (100, 72, 40)
SAMPLE_PER_LAYOUT = 3


def _configs(layout: str) -> list[TileConfig]:
    problem = GemmProblem(*SHAPE, layout=layout)  # type: ignore[arg-type]
    return sorted(space.SPACE.valid_configs(problem, ARCH), key=TileConfig.key)


def _sample(layout: str) -> list[TileConfig]:
    """The default configuration and SAMPLE_PER_LAYOUT - 1 more spread over the sorted list."""
    problem = GemmProblem(*SHAPE, layout=layout)  # type: ignore[arg-type]
    configs = _configs(layout)
    stride = max(1, len(configs) // (SAMPLE_PER_LAYOUT - 1))
    picked = [space.default_config(problem, ARCH), *configs[stride // 2 :: stride]]
    return list(dict.fromkeys(picked))[:SAMPLE_PER_LAYOUT]


def _check(layout: str, config: TileConfig, *, dtype: str = "fp16", specialized: bool = False):
    problem = GemmProblem(*SHAPE, dtype=dtype, layout=layout)  # type: ignore[arg-type]
    verdict = verify.verify_config(problem, config, seed=5, arch=ARCH, specialized=specialized)
    assert verdict.passed, verdict.line(problem)


SAMPLE = [(layout, config) for layout in GEMM_LAYOUTS for config in _sample(layout)]


@pytest.mark.parametrize(("layout", "config"), SAMPLE, ids=[f"{lay}-{c}" for lay, c in SAMPLE])
def test_a_sample_of_configurations_of_every_layout(layout: str, config: TileConfig) -> None:
    _check(layout, config)


@pytest.mark.parametrize("layout", ["nt", "tn"])
def test_specialized_bf16_interior_tiles(layout: str) -> None:
    # 128 x 64 x 64: every tile is interior (16-byte copies, pointer increments) in 32 x 32 tiles.
    problem = GemmProblem(128, 64, 64, dtype="bf16", layout=layout)  # type: ignore[arg-type]
    config = TileConfig(32, 32, 32, 2, 3, options=(("group_m", 4),))
    verdict = verify.verify_config(problem, config, seed=2, arch=ARCH, specialized=True)
    assert verdict.passed, verdict.line(problem)


@pytest.mark.slow
@pytest.mark.parametrize("layout", GEMM_LAYOUTS)
def test_every_valid_configuration_of_every_layout(layout: str) -> None:
    problem = GemmProblem(*SHAPE, layout=layout)  # type: ignore[arg-type]
    verdicts = verify.verify(problem, _configs(layout), seed=5, arch=ARCH, report=lambda _: None)
    failed = [v.line(problem) for v in verdicts if not v.passed]
    assert not failed, failed


def test_the_kernel_key_names_the_layout_and_nn_keeps_its_key() -> None:
    keys = {lay: GemmProblem(64, 32, 16, layout=lay).kernel_key(ARCH) for lay in GEMM_LAYOUTS}
    assert keys == {
        "nn": "gemm.fp16.m64.n32.k16.sm_90",
        "nt": "gemm.fp16.nt.m64.n32.k16.sm_90",
        "tn": "gemm.fp16.tn.m64.n32.k16.sm_90",
        "tt": "gemm.fp16.tt.m64.n32.k16.sm_90",
    }
    assert GemmProblem(64, 32, 16).generic_key(ARCH) == "gemm.fp16.sm_90.generic"
    assert GemmProblem(64, 32, 16, layout="tn").generic_key(ARCH) == "gemm.fp16.tn.sm_90.generic"
    for layout in GEMM_LAYOUTS:
        problem = GemmProblem(64, 32, 16, layout=layout)
        assert problem_from_dict(problem.to_dict()) == problem
    assert "layout" not in GemmProblem(64, 32, 16).to_dict()  # as before layouts existed


def test_an_unknown_layout_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"layout='nx': must be one of nn, nt, tn, tt"):
        GemmProblem(64, 32, 16, layout="nx")  # type: ignore[arg-type]


def test_shared_memory_follows_the_stored_tiles() -> None:
    config = TileConfig(128, 64, 32, 4, 2)
    pad = space.ROW_PAD_ELEMS

    def smem(layout: str) -> int:
        return space.smem_bytes(GemmProblem(256, 256, 256, layout=layout), config)  # type: ignore[arg-type]

    a_n, a_t = 128 * (32 + pad), 32 * (128 + pad)
    b_n, b_t = 32 * (64 + pad), 64 * (32 + pad)
    assert smem("nn") == 2 * (a_n + b_n) * 2
    assert smem("nt") == 2 * (a_n + b_t) * 2
    assert smem("tn") == 2 * (a_t + b_n) * 2
    assert smem("tt") == 2 * (a_t + b_t) * 2
