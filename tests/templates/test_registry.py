"""get_family maps op and family names to families and names the choices otherwise."""

from __future__ import annotations

import pytest

from templates.registry import family_for, get_family
from tessera_core.types import AttentionProblem, GemmProblem


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
    assert family_for(AttentionProblem(1, 2, 64, 64, 64), "sm_90a").name == "attention_fwd"
