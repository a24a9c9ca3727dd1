"""The attention_bwd variants compile with NVRTC without spills: every variant at once at head
dims 64, 128 (one KV block per key tile), 200 and 256 (head_dim split over KV blocks), the
default configuration on sm_80 and sm_90 (a sample by default, the rest and the deterministic
kernels behind `slow`), with tensor cores (HMMA) in the SASS."""

from __future__ import annotations

import pytest

from generator.compile import compile_kernel
from generator.render import render
from generator.sass import instruction_counts
from templates.attention_bwd import space
from templates.registry import get_family
from tessera_core.types import AttentionBackwardProblem

FAMILY = get_family("attention_bwd")


def _every_variant(head_dim: int, dtype: str) -> AttentionBackwardProblem:
    return AttentionBackwardProblem(
        2, 4, 1000, 1000, head_dim, dtype=dtype, causal=head_dim % 128 == 0, heads_kv=2,
        window_left=100, window_right=-1 if head_dim % 128 == 0 else 3, softcap=30.0,
        alibi="heads", layout="bshd",
    )  # fmt: skip


PROBLEMS = {
    "d64-fp16": _every_variant(64, "fp16"),
    "d128-bf16": _every_variant(128, "bf16"),
    "d200-fp16": _every_variant(200, "fp16"),  # padded (208), three parts
    "d256-bf16": _every_variant(256, "bf16"),
    "d256-plain": AttentionBackwardProblem(2, 4, 1000, 1000, 256, dtype="bf16"),  # two parts
}
SAMPLE = [("d128-bf16", "sm_90"), ("d256-bf16", "sm_80")]
REST = [(name, arch) for name in PROBLEMS for arch in ("sm_80", "sm_90")]
REST = [case for case in REST if case not in SAMPLE]


def _compile_clean(name: str, arch: str, *, deterministic: bool) -> None:
    problem = PROBLEMS[name]
    config = FAMILY.default_config(problem, arch)
    if deterministic:
        candidates = [c for c in space.SPACE.valid_configs(problem, arch) if space.deterministic(c)]
        if not candidates:
            pytest.skip(f"{name}: no deterministic configuration on {arch}")
        config = candidates[-1]
    compiled = compile_kernel(render(FAMILY, problem, config, specialized=False), arch=arch)
    assert compiled.resources.spill_bytes == 0, (str(config), compiled.log)
    assert instruction_counts(compiled.cubin).get("HMMA", 0) > 0


@pytest.mark.parametrize(("name", "arch"), SAMPLE)
def test_the_default_config_of_every_variant_compiles_without_spills(name: str, arch: str) -> None:
    _compile_clean(name, arch, deterministic=False)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "arch"), REST)
def test_the_other_defaults_compile_without_spills(name: str, arch: str) -> None:
    _compile_clean(name, arch, deterministic=False)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "arch"), SAMPLE + REST)
def test_the_largest_deterministic_config_compiles_without_spills(name: str, arch: str) -> None:
    _compile_clean(name, arch, deterministic=True)
