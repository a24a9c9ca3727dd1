"""arch="sm_90a" routes plain and causal bhsd attention at head_dim 64/128 (fp16, bf16) and FP8
e4m3 at head_dim 128 to attention_sm90 at tiers 2 and 3, against float64 (FP8: against the
dequantized inputs, within templates.attention_sm90.fp8.error_bound); what it cannot serve falls
back to the mma.sync family with the reason traced."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from cache.store import KernelCache
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig
from runtime.specialized import clear_memo
from templates import registry
from templates.attention.reference import attention_reference
from templates.attention_sm90 import fp8
from templates.registry import get_family
from tessera_core.types import AttentionProblem, TileConfig

ARCH = "sm_90a"
# Normwise against float64: P and O rounded to 16 bits (fp16 2^-11, bf16 2^-8), with room.
TOLERANCE = {"fp16": 2e-3, "bf16": 1.6e-2}
# A tuned tile other than the default (128 x 128, ping-pong): tier 3 must run what the cache says.
TUNED = TileConfig(64, 64, 64, 8, 3, (("pingpong", 0),))
DESCALE = (0.5, 0.25, 2.0)


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


def _config(cache_dir: Path, **changes: object) -> RuntimeConfig:
    base = RuntimeConfig(
        device="emulator",
        arch=ARCH,
        tier2_min_calls=1,
        tier3_min_calls=2,
        tuning_workers=0,
        cache_dirs=(cache_dir,),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _cache_tuned(cache_dir: Path, problem: AttentionProblem, config: TileConfig = TUNED) -> str:
    """Store `config` as the problem's tuned attention_sm90 kernel (the emulator runs the
    source; it needs only the config) and return its key."""
    key = registry.kernel_key(problem, ARCH)
    KernelCache(cache_dir=cache_dir).put(
        key,
        cubin=b"placeholder",
        ptx=None,
        metadata={
            "arch": ARCH,
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "template_hash": template_hash(get_family("attention_sm90")),
        },
    )
    return key


def _poisoned_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got64 = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got64)), "O has NaN: an element was never written"
    return float(np.linalg.norm(got64 - want) / np.linalg.norm(want))


@pytest.mark.parametrize(
    ("dtype", "head_dim", "causal"), [("fp16", 64, True), ("bf16", 128, False)]
)
def test_attention_sm90_serves_16_bit_attention_at_tiers_2_and_3(
    tmp_path: Path, dtype: str, head_dim: int, causal: bool
) -> None:
    rng = np.random.default_rng(head_dim)
    np_dtype = np.float16 if dtype == "fp16" else ml_dtypes.bfloat16
    # Ragged: neither length is a multiple of a tile; causal with more queries than keys.
    q = rng.standard_normal((1, 2, 136, head_dim)).astype(np_dtype)
    k, v = (rng.standard_normal((1, 2, 100, head_dim)).astype(np_dtype) for _ in range(2))
    problem = AttentionProblem(1, 2, 136, 100, head_dim, dtype=dtype, causal=causal)  # type: ignore[arg-type]
    key = _cache_tuned(tmp_path, problem)
    assert key == f"attention_sm90.{dtype}.b1.h2.sq136.skv100.d{head_dim}." + (
        "causal.sm_90a" if causal else "noncausal.sm_90a"
    )
    want, _ = attention_reference(q, k, v, causal=causal, accum_dtype=np.float64)
    with Runtime(config=_config(tmp_path)) as rt:
        outs = [rt.attention(q, k, v, causal=causal) for _ in range(3)]
        history = rt.history()
    calls = [r for r in history if r.event == "call"]
    assert [r.tier for r in calls] == [1, 2, 3]
    mask = "causal" if causal else "noncausal"
    assert [r.kernel_key for r in calls[1:]] == [
        f"attention_sm90.{dtype}.d{head_dim}.{mask}.sm_90a.generic",
        key,
    ]
    assert calls[2].config == TUNED.to_dict()
    assert "select" not in [r.event for r in history]  # nothing was refused
    for call, out in zip(calls, outs, strict=True):
        assert out.dtype == q.dtype and out.shape == q.shape
        assert _poisoned_rel_err(out, want) < TOLERANCE[dtype], f"tier {call.tier}"


def _e4m3_inputs(seed: int, seq_q: int, seq_kv: int) -> tuple[dict[str, np.ndarray], ...]:
    """(e4m3 arrays, their dequantized float64 values) of q, k, v at DESCALE."""
    rng = np.random.default_rng(seed)
    lengths = {"q": seq_q, "k": seq_kv, "v": seq_kv}
    bits = {
        name: fp8.quantize(rng.standard_normal((1, 2, n, 128)), factor)
        for (name, n), factor in zip(lengths.items(), DESCALE, strict=True)
    }
    values = {n: fp8.dequantize(b, f) for (n, b), f in zip(bits.items(), DESCALE, strict=True)}
    return {n: b.view(ml_dtypes.float8_e4m3fn) for n, b in bits.items()}, values


def test_e4m3_attention_runs_attention_sm90_at_tiers_2_and_3_within_the_e4m3_bound(
    tmp_path: Path,
) -> None:
    x, values = _e4m3_inputs(seed=31, seq_q=136, seq_kv=100)
    problem = AttentionProblem(1, 2, 136, 100, 128, dtype="e4m3", causal=True)
    tuned = dataclasses.replace(TUNED, block_n=128)  # e4m3's V^T tiles are 128 keys
    key = _cache_tuned(tmp_path, problem, tuned)
    want, want_lse = attention_reference(
        values["q"], values["k"], values["v"], causal=True, accum_dtype=np.float64
    )
    bound = fp8.error_bound(values["q"], values["k"], values["v"], causal=True, scale=128**-0.5)
    with Runtime(config=_config(tmp_path)) as rt:
        outs = [
            rt.attention(x["q"], x["k"], x["v"], causal=True, descale=DESCALE, return_lse=True)
            for _ in range(3)
        ]
        calls = [r for r in rt.history() if r.event == "call"]
    assert [r.tier for r in calls] == [1, 2, 3]
    assert [r.kernel_key for r in calls[1:]] == [
        "attention_sm90.e4m3.d128.causal.sm_90a.generic",
        key,
    ]
    assert calls[2].config == tuned.to_dict()
    empty = np.isneginf(want_lse)
    for call, (o, lse) in zip(calls, outs, strict=True):
        assert o.dtype == ml_dtypes.bfloat16 and o.shape == (1, 2, 136, 128)
        assert _poisoned_rel_err(o, want) < bound, f"tier {call.tier}"
        assert (np.isneginf(lse) == empty).all()
        assert np.abs(lse[~empty] - want_lse[~empty]).max() < 1e-4, f"tier {call.tier}"


def test_e4m3_arguments_are_checked_in_one_line_errors(tmp_path: Path) -> None:
    x, _ = _e4m3_inputs(seed=1, seq_q=8, seq_kv=8)
    q16 = np.zeros((1, 2, 8, 128), np.float16)
    with Runtime(config=_config(tmp_path)) as rt:
        with pytest.raises(ValueError, match=r"descale=\(1.0, 0.0, 1.0\): expected"):
            rt.attention(x["q"], x["k"], x["v"], descale=(1.0, 0.0, 1.0))
        with pytest.raises(ValueError, match=r"descale=.*only for e4m3"):
            rt.attention(q16, q16, q16, descale=(1.0, 1.0, 1.0))
        with pytest.raises(ValueError, match="k is float16; e4m3 attention takes"):
            rt.attention(x["q"], q16, q16)
        with pytest.raises(ValueError, match="head_dim=64: e4m3 attention serves head_dim 128"):
            small = fp8.quantize(np.zeros((1, 2, 8, 64))).view(ml_dtypes.float8_e4m3fn)
            rt.attention(small, small, small)
        with pytest.raises(ValueError, match="not served in FP8"):
            rt.attention(x["q"], x["k"], x["v"], softcap=5.0)


@pytest.mark.parametrize(
    ("shape", "options", "reason"),
    [
        ((1, 2, 64, 96), {}, "head_dim: head_dim=96: attention_sm90 serves 64, 128"),
        ((1, 2, 64, 64), {"gqa": True}, "variant: heads_kv=1 (GQA/MQA)"),
        ((1, 2, 64, 64), {"window_size": (16, 0)}, "variant: window_size=(16, 0)"),
        ((1, 2, 64, 128), {"softcap": 30.0}, "variant: softcap=30"),
        ((1, 2, 64, 64), {"layout": "bshd"}, "variant: layout=bshd"),
    ],
)
def test_what_attention_sm90_cannot_serve_falls_back_with_the_reason_traced(
    tmp_path: Path, shape: tuple[int, ...], options: dict[str, object], reason: str
) -> None:
    rng = np.random.default_rng(7)
    q = rng.standard_normal(shape).astype(np.float16)
    kv_shape = (shape[0], 1, *shape[2:]) if options.pop("gqa", False) else shape
    k, v = (rng.standard_normal(kv_shape).astype(np.float16) for _ in range(2))
    # No compiled tier: the selection is traced before any kernel is built.
    with Runtime(config=_config(tmp_path, tier2=False, tier3=False)) as rt:
        rt.attention(q, k, v, **options)  # type: ignore[arg-type]
        (select,) = [r for r in rt.history() if r.event == "select"]
    assert select.detail.startswith(f"attention_fwd serves it: attention_sm90: {reason}")


def test_varlen_attention_is_refused_by_attention_sm90() -> None:
    problem = AttentionProblem(3, 2, 64, 64, 64, layout="bshd", varlen=True)
    selection = registry.select(problem, ARCH)
    assert selection.family.name == "attention_fwd"
    assert selection.fallback_reason == (
        "attention_sm90: variant: varlen: attention_sm90 serves plain or causal bhsd "
        "attention; use the mma.sync attention family"
    )
    plain = AttentionProblem(3, 2, 64, 64, 64)
    assert registry.select(plain, ARCH).family.name == "attention_sm90"
    assert registry.select(plain, "sm_90").family.name == "attention_fwd"


def test_the_cuda_kernel_refuses_e4m3_in_one_line_until_it_transposes_v_on_the_gpu() -> None:
    from runtime.cuda_backend import CudaKernel
    from runtime.tiers import Tier

    x, _ = _e4m3_inputs(seed=2, seq_q=8, seq_kv=8)
    problem = AttentionProblem(1, 2, 8, 8, 128, dtype="e4m3")
    kernel = CudaKernel(
        tier=Tier.GENERIC,
        problem=problem,
        config=get_family("attention_sm90").default_config(problem, ARCH),
        kernel_key=registry.generic_key(problem, ARCH),
        loaded=None,
        family=get_family("attention_sm90"),
    )
    with pytest.raises(NotImplementedError, match="e4m3 attention on device='cuda'"):
        kernel.run((x["q"], x["k"], x["v"], DESCALE), causal=False, scale=None)
