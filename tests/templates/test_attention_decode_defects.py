"""Planted defects in the attention_decode source that the emulated float64 check must catch: a
block-table lookup off by one page, a split-KV combine (or the warps' merge) without LSE
rescaling, an arrival counter left set, and ALiBi with the wrong sign, the KV head's slope
for every query head of its GQA group, or the distance measured from the wrong diagonal."""

from __future__ import annotations

import dataclasses

import pytest
from decode_runs import DecodeCase, errors, make_tensors, problem_of

from generator.emulate_decode import run_rendered_decode
from generator.render import render
from templates.attention_decode import space
from templates.registry import get_family
from tessera_core.errors import EmulatorError

ARCH = "sm_90"
# Paged by 16 with spare block-table columns (a wrong page is a valid page of other keys),
# two KV tiles per split, GQA, ragged lengths.
CASE = DecodeCase(
    heads_q=4, heads_kv=2, head_dim=32, cache_seqlens=(150, 97), seq_new=1, page_size=16
)
CONFIG = space.tile(16, 32, 2, 2, 4)

DEFECTS = {
    "block_table_off_by_one_page": (
        "const int page = p.block_table[(long long)batch * p.max_pages + j / page_size];\n"
        "      row =",
        "const int page = p.block_table[(long long)batch * p.max_pages + j / page_size + 1];\n"
        "      row =",
    ),
    "split_combine_without_lse_rescaling": (
        "const float weight = tessera::fast_exp2((split_lse - max_safe) * LOG2E);",
        "const float weight = 1.0f;",
    ),
    "warp_merge_without_rescaling": (
        "red_max[w * BLOCK_M + r] = tessera::fast_exp2(red_max[w * BLOCK_M + r] - max_safe) "
        "* inv_denom;",
        "red_max[w * BLOCK_M + r] = inv_denom;",
    ),
}


# The same case with per-(batch, head) ALiBi slopes: GQA 4:2 packs two query heads with
# different slopes into each row block.
ALIBI_CASE = dataclasses.replace(CASE, alibi="batch_heads")
ALIBI_DEFECTS = {
    "alibi_wrong_sign": (
        "x -= alibi_log2[mt][i >> 1] * fabsf(float(s + diag - j));",
        "x += alibi_log2[mt][i >> 1] * fabsf(float(s + diag - j));",
    ),
    "alibi_kv_head_slope_under_gqa": (
        "const int head = kv_head * group + r % group;",
        "const int head = kv_head * group;",
    ),
    "alibi_top_left_diagonal": (
        "x -= alibi_log2[mt][i >> 1] * fabsf(float(s + diag - j));",
        "x -= alibi_log2[mt][i >> 1] * fabsf(float(s - j));",
    ),
}


def _run(source_edit: tuple[str, str] | None, case: DecodeCase = CASE) -> list[str]:
    tensors = make_tensors(case, seed=11)
    rendered = render(get_family("attention_decode"), problem_of(case, tensors), CONFIG, arch=ARCH)
    if source_edit is not None:
        old, new = source_edit
        assert rendered.source.count(old) == 1, f"defect anchor not found once: {old!r}"
        rendered = dataclasses.replace(rendered, source=rendered.source.replace(old, new))
    return errors(case, tensors, run_rendered_decode(rendered, tensors))


@pytest.mark.parametrize("case", [CASE, ALIBI_CASE], ids=lambda c: c.alibi)
def test_the_intact_kernel_passes(case: DecodeCase) -> None:
    assert _run(None, case) == []


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_planted_defect_is_caught(defect: str) -> None:
    found = _run(DEFECTS[defect])
    assert any(f.startswith("O ") for f in found), f"planted defect {defect} went unnoticed"


@pytest.mark.parametrize("defect", sorted(ALIBI_DEFECTS))
def test_planted_alibi_defect_is_caught(defect: str) -> None:
    found = _run(ALIBI_DEFECTS[defect], ALIBI_CASE)
    assert any(f.startswith("O ") for f in found), f"planted defect {defect} went unnoticed"


def test_a_counter_left_set_is_caught() -> None:
    with pytest.raises(EmulatorError, match="arrival counter"):
        _run(("if (threadIdx.x == 0) *counter = 0;", ""))
