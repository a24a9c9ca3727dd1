"""The LLM variants of the attention forward (GQA/MQA, head dims to 256, sliding windows, softcap,
ALiBi, the bshd layout) on the host emulator against the float64 reference, at ragged shapes.

Each variant runs by default on one valid configuration drawn (seeded) from its space, so
successive cases cover different tiles; `-m slow` sweeps every valid configuration. The verdict
is generator.verify's: fresh random inputs, outputs poisoned with NaN, normwise relative error
within 4 units of roundoff, LSE within 1e-3.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from generator import emulator, verify
from templates.attention import space
from templates.attention.family import FAMILY, tensor_shapes
from templates.attention.reference import attention_reference, attention_varlen_reference
from tessera_core.types import AttentionProblem, TileConfig

ARCH = "sm_90"


def variant(**fields: object) -> AttentionProblem:
    base: dict[str, object] = {
        "batch": 1,
        "heads": 2,
        "seq_q": 77,
        "seq_kv": 130,
        "head_dim": 64,
    }
    return AttentionProblem(**(base | fields))  # type: ignore[arg-type]


VARIANTS: dict[str, AttentionProblem] = {
    "gqa-4:2": variant(heads=4, heads_kv=2),
    "mqa-4:1-causal": variant(heads=4, heads_kv=1, causal=True),
    "window-20,5": variant(window_left=20, window_right=5),
    # More queries than keys: the window is bottom-right aligned, so the first rows see nothing.
    "window-10,0-seq_q>seq_kv": variant(seq_q=130, seq_kv=77, window_left=10, window_right=0),
    "causal-window-20": variant(causal=True, window_left=20),
    "softcap-3": variant(softcap=3.0, dtype="bf16"),
    "alibi-heads": variant(alibi="heads"),
    "alibi-batch-heads-causal": variant(batch=2, alibi="batch_heads", causal=True),
    "bshd-gqa": variant(batch=2, heads=4, heads_kv=2, layout="bshd"),
    "bshd-window-softcap-alibi": variant(
        layout="bshd", window_left=30, window_right=30, softcap=20.0, alibi="heads"
    ),
    "head_dim-40": variant(head_dim=40),
    "head_dim-200-causal": variant(head_dim=200, causal=True),
    "head_dim-256": variant(head_dim=256, dtype="bf16"),
    # Packed sequences (cu_seqlens): 3 ragged sequences, the first the longest.
    "varlen-gqa-causal": variant(
        batch=3, heads=4, heads_kv=2, layout="bshd", varlen=True, causal=True
    ),
    "varlen-window-softcap-alibi": variant(
        batch=3,
        seq_q=90,
        seq_kv=60,
        head_dim=40,
        layout="bshd",
        varlen=True,
        window_left=10,
        window_right=3,
        softcap=5.0,
        alibi="batch_heads",
    ),
}


def sampled_config(name: str, problem: AttentionProblem) -> TileConfig:
    """One valid configuration of `problem`, the same one on every run (seeded by the name)."""
    configs = FAMILY.space.valid_configs(problem, ARCH)
    return configs[zlib.crc32(name.encode()) % len(configs)]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_matches_float64_on_a_sampled_configuration(name: str) -> None:
    problem = VARIANTS[name]
    config = sampled_config(name, problem)
    verdict = verify.verify_config(problem, config, seed=zlib.crc32(name.encode()), arch=ARCH)
    assert verdict.passed, f"{name} {config}: {verdict.detail} (rel_err={verdict.rel_err:.2e})"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_matches_float64_on_every_valid_configuration(name: str) -> None:
    problem = variant(**{**_fields(VARIANTS[name]), "seq_q": 45, "seq_kv": 70})
    verdicts = verify.verify(
        problem, FAMILY.space.valid_configs(problem, ARCH), seed=3, arch=ARCH, report=lambda _: None
    )
    failed = [f"{v.config}: {v.detail}" for v in verdicts if not v.passed]
    assert not failed, failed


def _fields(problem: AttentionProblem) -> dict[str, object]:
    return {
        "batch": problem.batch,
        "heads": problem.heads,
        "head_dim": problem.head_dim,
        "dtype": problem.dtype,
        "causal": problem.causal,
        "heads_kv": problem.heads_kv,
        "window_left": problem.window_left,
        "window_right": problem.window_right,
        "softcap": problem.softcap,
        "alibi": problem.alibi,
        "layout": problem.layout,
        "varlen": problem.varlen,
    }


def test_rows_outside_every_window_get_zero_output_and_minus_infinity_lse() -> None:
    # 130 queries, 77 keys, window (10, 0): row i sees keys i - 53 - 10 .. i - 53, so rows
    # 0..52 see none; their whole query blocks skip the main loop.
    problem = VARIANTS["window-10,0-seq_q>seq_kv"]
    inputs = verify.random_inputs(problem, seed=5)
    config = TileConfig(32, 32, 16, 2, 2, options=(("q_in_regs", 0),))
    run = emulator.run_attention_problem(
        problem, inputs["q"], inputs["k"], inputs["v"], config=config, arch=ARCH
    )
    o, lse = run.outputs["o"], run.outputs["lse"]
    assert np.all(o[:, :, :53] == 0) and np.all(np.isneginf(lse[:, :, :53]))
    assert np.all(np.isfinite(lse[:, :, 53:]))


def test_run_attention_takes_the_variants_as_keywords() -> None:
    # The array API names the variants as FlashAttention does and infers GQA from k's heads.
    rng = np.random.default_rng(11)
    q = rng.standard_normal((1, 33, 4, 24)).astype(np.float16)  # bshd, head_dim 24
    k = rng.standard_normal((1, 50, 2, 24)).astype(np.float16)
    v = rng.standard_normal((1, 50, 2, 24)).astype(np.float16)
    slopes = np.array([0.1, 0.2, 0.05, 0.3], dtype=np.float32)
    kwargs = {"window_size": (8, 2), "softcap": 5.0, "alibi_slopes": slopes, "layout": "bshd"}
    o, lse = emulator.run_attention(q, k, v, causal=False, arch=ARCH, **kwargs)  # type: ignore[arg-type]
    want_o, want_lse = attention_reference(q, k, v, accum_dtype=np.float64, **kwargs)  # type: ignore[arg-type]
    rel = np.linalg.norm(o.astype(np.float64) - want_o) / np.linalg.norm(want_o)
    assert o.shape == q.shape and rel < 4 * 2.0**-11
    assert np.max(np.abs(lse - want_lse)) < 1e-3


def test_reference_window_and_alibi_follow_flash_attention_2() -> None:
    # FA2's construct_local_mask and attn_bias_from_alibi_slopes, written out for 3 x 5.
    q = np.eye(3, 4)[None, None]
    k = np.zeros((1, 1, 5, 4))
    v = np.arange(5.0)[None, None, :, None] * np.ones((1, 1, 5, 4))
    o, _ = attention_reference(q, k, v, window_size=(1, 0), accum_dtype=np.float64)
    # off = 2: row i sees keys i + 1 .. i + 2 with equal weights -> mean of those key indices.
    np.testing.assert_allclose(o[0, 0, :, 0], [1.5, 2.5, 3.5])
    slopes = np.array([np.log(2.0)])
    o, _ = attention_reference(q, k, v, alibi_slopes=slopes, accum_dtype=np.float64)
    weights = 2.0 ** -np.abs(np.arange(3)[:, None] + 2 - np.arange(5)[None, :])
    np.testing.assert_allclose(o[0, 0, :, 0], (weights @ np.arange(5.0)) / weights.sum(1))


def test_large_head_dims_fit_only_where_registers_do() -> None:
    # head_dim 256 carries 128 O registers per thread in a 16-row warp: 32-row warps, and Q
    # held in registers, are rejected with the register rule's reason.
    problem = variant(head_dim=256)
    reasons = FAMILY.space.violations(
        TileConfig(128, 64, 16, 4, 2, options=(("q_in_regs", 0),)), problem, ARCH
    )
    assert any(r.startswith("registers") and "would spill" in r for r in reasons)
    assert FAMILY.space.is_valid(FAMILY.default_config(problem, ARCH), problem, ARCH)
    assert space.padded_head_dim(200) == 208 and space.padded_head_dim(256) == 256


def test_variants_add_to_the_keys_only_when_set() -> None:
    plain = AttentionProblem(2, 8, 128, 128, 64)
    assert plain.kernel_key("sm_90") == "attention_fwd.fp16.b2.h8.sq128.skv128.d64.noncausal.sm_90"
    assert plain.generic_key("sm_90") == "attention_fwd.fp16.d64.noncausal.sm_90.generic"
    assert plain.to_dict() == {
        "op": "attention",
        "batch": 2,
        "heads": 8,
        "seq_q": 128,
        "seq_kv": 128,
        "head_dim": 64,
        "dtype": "fp16",
        "causal": False,
    }
    llm = AttentionProblem(
        2, 8, 128, 128, 64, heads_kv=2, window_left=64, softcap=30.0, alibi="heads", layout="bshd"
    )
    assert llm.kernel_key("sm_90") == (
        "attention_fwd.fp16.b2.h8.sq128.skv128.d64.noncausal.hkv2.win64_-1.cap30.alibi_heads"
        ".bshd.sm_90"
    )
    assert llm.generic_key("sm_90") == (
        "attention_fwd.fp16.d64.noncausal.gqa.window.softcap.alibi.bshd.sm_90.generic"
    )
    from tessera_core.types import problem_from_dict

    assert problem_from_dict(llm.to_dict()) == llm


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"heads_kv": 3}, "heads_kv=3: must divide heads=8"),
        ({"window_left": -2}, "window_left=-2: must be an integer >= 0, or -1"),
        ({"softcap": -1.0}, "softcap=-1.0: must be 0 (off) or a positive finite float"),
        ({"alibi": "rows"}, "alibi='rows': must be one of none, heads, batch_heads"),
        ({"layout": "sbhd"}, "layout='sbhd': must be one of bhsd, bshd"),
    ],
)
def test_bad_variant_values_are_one_line_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AttentionProblem(1, 8, 64, 64, 64, **fields)  # type: ignore[arg-type]


def test_varlen_keys_name_a_length_bucket_and_lse_is_heads_by_total() -> None:
    problem = AttentionProblem(4, 8, 300, 1000, 64, layout="bshd", varlen=True, causal=True)
    assert problem.kernel_key("sm_90") == (
        "attention_fwd.fp16.b4.h8.sq512.skv1024.d64.causal.bshd.varlen.sm_90"
    )
    assert AttentionProblem(4, 8, 257, 513, 64, layout="bshd", varlen=True).kernel_key(
        "sm_90"
    ) == AttentionProblem(4, 8, 512, 1024, 64, layout="bshd", varlen=True).kernel_key("sm_90")
    assert problem.generic_key("sm_90").endswith(".bshd.varlen.sm_90.generic")
    shapes = tensor_shapes(problem, totals=(700, 2500))
    assert shapes["q"] == (700, 8, 64) and shapes["k"] == (2500, 8, 64)
    assert shapes["lse"] == (8, 700)
    with pytest.raises(ValueError, match="varlen=True: must be a bool, and True only with"):
        AttentionProblem(4, 8, 300, 1000, 64, varlen=True)


def test_run_attention_varlen_matches_the_varlen_reference() -> None:
    rng = np.random.default_rng(4)
    cu_q = np.array([0, 5, 5, 41], dtype=np.int32)  # an empty sequence in the middle
    cu_k = np.array([0, 17, 20, 50], dtype=np.int32)
    q = rng.standard_normal((41, 2, 16)).astype(np.float16)
    k = rng.standard_normal((50, 1, 16)).astype(np.float16)
    v = rng.standard_normal((50, 1, 16)).astype(np.float16)
    o, lse = emulator.run_attention_varlen(
        q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=36, max_seqlen_k=30,
        causal=True, arch=ARCH,
    )  # fmt: skip
    want_o, want_lse = attention_varlen_reference(
        q, k, v, cu_q, cu_k, causal=True, accum_dtype=np.float64
    )
    assert o.shape == q.shape and lse.shape == (2, 41)
    rel = np.linalg.norm(o.astype(np.float64) - want_o) / np.linalg.norm(want_o)
    assert rel < 4 * 2.0**-11
    seen = np.isfinite(want_lse)
    np.testing.assert_array_equal(np.isneginf(lse), ~seen)
    assert np.max(np.abs(lse[seen] - want_lse[seen])) < 1e-3


def test_windows_are_normalized_as_flash_attention_2_does() -> None:
    # A side of at least seq_kv is unbounded; causal bounds the right side itself.
    assert AttentionProblem(1, 1, 64, 64, 64, window_left=64, window_right=200).has_window is False
    causal = AttentionProblem(1, 1, 64, 64, 64, causal=True, window_left=8, window_right=0)
    assert (causal.window_left, causal.window_right) == (8, -1)
