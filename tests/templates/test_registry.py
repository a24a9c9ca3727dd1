"""get_family maps op and family names to families and names the choices otherwise."""

from __future__ import annotations

import pytest

from templates.registry import get_family


def test_op_and_family_names_resolve() -> None:
    assert get_family("attention") is get_family("attention_fwd")
    assert get_family("attention").name == "attention_fwd"
    assert get_family("gemm").name == "gemm"
    assert get_family("attention_bwd").name == "attention_bwd"


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="attention, attention_fwd, attention_bwd, gemm"):
        get_family("conv2d")
