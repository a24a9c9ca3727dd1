"""The attention_decode template compiles with NVRTC without spills: the default configuration
on tensor cores (HMMA), ldmatrix (LDSM), cp.async (LDGSTS) and the split counter's atomic;
the most register-hungry valid configurations of each head_dim in the slow sweep (the space's
register budgets were set from these: none spills on sm_80 or sm_90)."""

from __future__ import annotations

import pytest

from generator.compile import compile_kernel
from generator.render import render
from generator.sass import instruction_counts
from templates.attention_decode import space
from templates.registry import get_family
from tessera_core.types import AttentionDecodeProblem

FAMILY = get_family("attention_decode")


def _problem(head_dim: int, page_size: int = 16) -> AttentionDecodeProblem:
    return AttentionDecodeProblem(4, 32, 1, 4096, head_dim, "bf16", heads_kv=8, page_size=page_size)


def test_default_config_compiles_without_spills_on_tensor_cores() -> None:
    problem = _problem(128)
    config = FAMILY.default_config(problem, "sm_90")
    compiled = compile_kernel(render(FAMILY, problem, config, specialized=False), arch="sm_90")
    assert compiled.resources.spill_bytes == 0, compiled.log
    counts = instruction_counts(compiled.cubin)
    for mnemonic in ("HMMA", "LDSM", "LDGSTS"):
        assert counts.get(mnemonic, 0) > 0, f"{mnemonic} missing from SASS: {sorted(counts)}"
    assert any(op.startswith("ATOM") for op in counts), sorted(counts)


def test_the_alibi_variant_compiles_without_spills() -> None:
    # HAS_ALIBI keeps two slopes per row tile live across the loop: the default tiles of the
    # largest head dim must still fit.
    import dataclasses

    problem = dataclasses.replace(_problem(256), alibi="batch_heads")
    config = FAMILY.default_config(problem, "sm_80")
    rendered = render(FAMILY, problem, config, specialized=False)
    assert "constexpr bool HAS_ALIBI = true;" in rendered.source
    compiled = compile_kernel(rendered, arch="sm_80")
    assert compiled.resources.spill_bytes == 0, compiled.log


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_the_largest_valid_tiles_compile_without_spills(head_dim: int, arch: str) -> None:
    problem = _problem(head_dim)
    tiles = {
        (c.block_m, c.block_n, c.num_warps, c.num_stages): c
        for c in space.SPACE.valid_configs(problem, arch)
    }
    hungriest = sorted(tiles.values(), key=lambda c: -space.fragment_registers(problem, c))[:3]
    spilled = {}
    for config in hungriest:
        compiled = compile_kernel(render(FAMILY, problem, config, specialized=False), arch=arch)
        if compiled.resources.spill_bytes:
            spilled[str(config)] = compiled.resources.spill_bytes
    assert not spilled, spilled
