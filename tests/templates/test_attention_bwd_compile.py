"""The attention_bwd template compiles with NVRTC for sm_80 and sm_90 without spills: the default
configurations on tensor cores (HMMA), ldmatrix (LDSM), cp.async (LDGSTS) and, for atomic dQ,
fp32 reductions (RED/REDG); every valid configuration in the slow sweep."""

from __future__ import annotations

import pytest

from generator.compile import compile_kernel
from generator.render import render
from generator.sass import instruction_counts
from templates.attention_bwd import space
from templates.registry import get_family
from tessera_core.types import AttentionBackwardProblem

ARCHS = ("sm_80", "sm_90")
FAMILY = get_family("attention_bwd")
DEFAULT_PROBLEMS = [
    AttentionBackwardProblem(2, 4, 1000, 1000, 64, dtype="fp16", causal=True),
    AttentionBackwardProblem(2, 4, 1000, 1000, 128, dtype="bf16", causal=False),
]


def _atomics(counts: dict[str, int]) -> int:
    """Global reductions and atomics: RED (sm_80), REDG (sm_90), ATOM, ATOMG."""
    return sum(n for op, n in counts.items() if op.startswith(("RED", "ATOM")))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("problem", DEFAULT_PROBLEMS, ids=lambda p: f"d{p.head_dim}-{p.dtype}")
def test_default_config_compiles_without_spills_on_tensor_cores(
    problem: AttentionBackwardProblem, arch: str
) -> None:
    config = FAMILY.default_config(problem, arch)
    assert not space.deterministic(config)
    compiled = compile_kernel(render(FAMILY, problem, config, specialized=False), arch=arch)

    assert compiled.resources.spill_bytes == 0, compiled.log
    counts = instruction_counts(compiled.cubin)
    for mnemonic in ("HMMA", "LDSM", "LDGSTS"):
        assert counts.get(mnemonic, 0) > 0, f"{mnemonic} missing from SASS: {sorted(counts)}"
    assert _atomics(counts) > 0, sorted(counts)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_deterministic_kernel_has_no_atomics(arch: str) -> None:
    problem = DEFAULT_PROBLEMS[0]
    config = space.tile(64, 64, 4, 2, det=1)
    counts = instruction_counts(compile_kernel(render(FAMILY, problem, config), arch=arch).cubin)
    assert counts.get("HMMA", 0) > 0
    assert _atomics(counts) == 0, sorted(counts)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head_dim", [16, 32, 40, 48, 64, 80, 96, 112, 128, 136, 192, 256])
def test_every_valid_config_compiles_without_spills(head_dim: int, arch: str) -> None:
    problem = AttentionBackwardProblem(1, 2, 300, 300, head_dim, dtype="bf16", causal=True)
    configs = space.SPACE.valid_configs(problem, arch)
    assert configs
    spilled = {}
    for config in configs:
        compiled = compile_kernel(render(FAMILY, problem, config, specialized=False), arch=arch)
        if compiled.resources.spill_bytes:
            spilled[str(config)] = compiled.resources.spill_bytes
    assert not spilled, spilled
