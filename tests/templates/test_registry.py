"""get_family maps names to families; select routes a problem on an arch to the family serving
it (ROUTES: sm_90a's Hopper families first, the op's mma.sync family otherwise) and names keys."""

from __future__ import annotations

import types
from typing import Any

import pytest

from templates import registry
from templates.registry import Route, family_for, generic_key, get_family, kernel_key, select
from tessera_core.space import Constraint, Param, Space
from tessera_core.types import AttentionProblem, GemmProblem, Problem, TileConfig


def test_op_and_family_names_resolve() -> None:
    assert get_family("attention") is get_family("attention_fwd")
    assert get_family("attention").name == "attention_fwd"
    assert get_family("gemm").name == "gemm"
    assert get_family("attention_bwd").name == "attention_bwd"


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="attention, attention_fwd, attention_bwd, gemm"):
        get_family("conv2d")


def test_family_for_picks_the_hopper_gemm_on_sm90a_when_tma_can_read_it() -> None:
    aligned, ragged = GemmProblem(100, 136, 264), GemmProblem(100, 130, 264)
    assert family_for(aligned, "sm_90a").name == "gemm_sm90"
    assert family_for(ragged, "sm_90a").name == "gemm"  # N % 8 != 0: no TMA
    assert family_for(aligned, "sm_90").name == "gemm"
    assert family_for(AttentionProblem(1, 2, 64, 64, 64), "sm_90a").name == "attention_sm90"
    assert family_for(AttentionProblem(1, 2, 64, 64, 64), "sm_90").name == "attention_fwd"


def test_sm80_to_sm89_and_plain_sm90_keep_the_mma_sync_gemm() -> None:
    aligned = GemmProblem(256, 256, 256, dtype="bf16")
    for arch in ("sm_80", "sm_86", "sm_89", "sm_90"):
        selection = select(aligned, arch)
        assert selection.family.name == "gemm" and selection.fallback_reason is None
        assert kernel_key(aligned, arch) == f"gemm.bf16.m256.n256.k256.{arch}"
        assert generic_key(aligned, arch) == f"gemm.bf16.{arch}.generic"


def test_sm90a_keys_name_the_serving_family_so_aligned_and_ragged_never_share_one() -> None:
    aligned, ragged = GemmProblem(100, 136, 264), GemmProblem(100, 130, 264)
    assert kernel_key(aligned, "sm_90a") == "gemm_sm90.fp16.m100.n136.k264.sm_90a"
    assert generic_key(aligned, "sm_90a") == "gemm_sm90.fp16.sm_90a.generic"
    assert kernel_key(ragged, "sm_90a") == "gemm.fp16.m100.n130.k264.sm_90a"
    assert generic_key(ragged, "sm_90a") == "gemm.fp16.sm_90a.generic"
    assert kernel_key(AttentionProblem(1, 2, 64, 64, 64), "sm_90a") == (
        "attention_sm90.fp16.b1.h2.sq64.skv64.d64.noncausal.sm_90a"
    )
    assert kernel_key(AttentionProblem(1, 2, 64, 64, 96), "sm_90a") == (
        "attention_fwd.fp16.b1.h2.sq64.skv64.d96.noncausal.sm_90a"
    )


def test_a_refused_route_falls_back_with_the_family_and_its_reason() -> None:
    selection = select(GemmProblem(100, 136, 260), "sm_90a")  # K % 8 != 0
    assert selection.family.name == "gemm"
    assert selection.passed_over == (
        "gemm_sm90: tma_alignment: N=136, K=260: TMA needs rows of a multiple of 16 bytes "
        "(N a multiple of 8, K of 8 for fp16); use the mma.sync gemm family",
    )
    assert select(GemmProblem(100, 136, 264), "sm_90a").fallback_reason is None


# -- the registry contract a new arch-specific family plugs into (one Route line) -------------


def _fake_attention_sm90() -> Any:
    """A family serving fp16 attention of head_dim 64 or 128 only, as a Hopper family might."""

    def head_dim(config: TileConfig, problem: Problem, arch: str) -> str | None:
        d = getattr(problem, "head_dim", 0)
        return None if d in (64, 128) else f"head_dim={d}: 64 or 128"

    space = Space(
        family="attention_sm90_fake",
        params=tuple(
            Param(name, (value,))
            for name, value in zip(TileConfig.FIELDS, (128, 128, 64, 8, 2), strict=True)
        ),
        constraints=(Constraint("head_dim", head_dim),),
    )
    return types.SimpleNamespace(name="attention_sm90_fake", op="attention", space=space)


@pytest.fixture
def fake_route(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = _fake_attention_sm90()
    real_get_family = registry.get_family

    def get_family_with_fake(name: str) -> Any:
        return fake if name == fake.name else real_get_family(name)

    monkeypatch.setattr(registry, "get_family", get_family_with_fake)
    others = tuple(r for r in registry.ROUTES if r.op != "attention")  # the fake replaces
    monkeypatch.setattr(registry, "ROUTES", (*others, Route("attention", "sm_90a", fake.name)))
    registry.select.cache_clear()
    yield fake
    registry.select.cache_clear()


def test_a_registered_route_serves_its_op_on_its_arch_only(fake_route: Any) -> None:
    problem = AttentionProblem(2, 4, 256, 256, 128, causal=True)
    assert family_for(problem, "sm_90a") is fake_route
    assert family_for(problem, "sm_90").name == "attention_fwd"
    assert family_for(GemmProblem(64, 64, 64), "sm_90a").name == "gemm_sm90"  # untouched
    assert kernel_key(problem, "sm_90a") == (
        "attention_sm90_fake.fp16.b2.h4.sq256.skv256.d128.causal.sm_90a"
    )
    assert generic_key(problem, "sm_90a") == "attention_sm90_fake.fp16.d128.causal.sm_90a.generic"


def test_a_registered_route_that_refuses_falls_back_to_the_ops_family(fake_route: Any) -> None:
    selection = select(AttentionProblem(1, 2, 64, 64, 96), "sm_90a")
    assert selection.family.name == "attention_fwd"
    assert selection.fallback_reason == "attention_sm90_fake: head_dim: head_dim=96: 64 or 128"
    assert generic_key(AttentionProblem(1, 2, 64, 64, 96), "sm_90a") == (
        "attention_fwd.fp16.d96.noncausal.sm_90a.generic"
    )
