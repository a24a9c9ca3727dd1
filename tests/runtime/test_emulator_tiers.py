"""The same inputs through tiers 1, 2 and 3 on the host emulator agree within dtype tolerance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from cache.store import KernelCache
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig
from runtime.specialized import clear_memo
from templates.registry import get_family
from tessera_core.types import AttentionProblem, GemmProblem, Problem, TileConfig

# Relative Frobenius error against the float64 reference: a few output roundings of the dtype.
TOLERANCE = {"fp16": 4e-3, "bf16": 3e-2}
DTYPES = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}
ARCH = "sm_80"  # a GPU machine of another arch never tries to launch the placeholder cubin
TUNED = TileConfig(
    block_m=64, block_n=32, block_k=16, num_warps=4, num_stages=2, options=(("q_in_regs", 1),)
)


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got64 = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got64)), "output has NaN/inf: a poisoned element was never written"
    return float(np.linalg.norm(got64 - want) / np.linalg.norm(want))


def _attention64(q: Any, k: Any, v: Any, causal: bool, scale: float) -> tuple[Any, Any]:
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scores = q64 @ np.swapaxes(k64, -1, -2) * scale
    if causal:
        sq, skv = scores.shape[-2:]
        mask = np.arange(skv)[None, :] > np.arange(sq)[:, None] + (skv - sq)
        scores = np.where(mask, -np.inf, scores)
    peak = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - peak)
    total = weights.sum(axis=-1, keepdims=True)
    return (weights / total) @ v64, (peak + np.log(total))[..., 0]


def _tuned_entry(cache_dir: Path, problem: Problem, config: TileConfig = TUNED) -> None:
    """What a finished tuning job leaves behind; the emulator needs only the config."""
    KernelCache(cache_dir=cache_dir).put(
        problem.kernel_key(ARCH),
        cubin=b"placeholder",
        ptx=None,
        metadata={
            "arch": ARCH,
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "template_hash": template_hash(get_family(problem.op)),
        },
    )


def _runtime_config(cache_dir: Path) -> RuntimeConfig:
    """Tier 2 from the first call, tier 3 from the second; nothing is tuned in background."""
    return RuntimeConfig(
        device="emulator",
        arch=ARCH,
        tier2_min_calls=1,
        tier3_min_calls=2,
        tuning_workers=0,
        cache_dirs=(cache_dir,),
    )


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


@pytest.mark.parametrize(("dtype", "causal"), [("fp16", False), ("bf16", True)])
def test_attention_tiers_agree(tmp_path: Path, dtype: str, causal: bool) -> None:
    rng = np.random.default_rng(7)
    shape = (1, 2, 64, 64)
    q, k, v = (rng.standard_normal(shape).astype(DTYPES[dtype]) for _ in range(3))
    scale = 0.2
    want_o, want_lse = _attention64(q, k, v, causal, scale)
    config = _runtime_config(tmp_path)
    b, h, sq, d = shape
    _tuned_entry(tmp_path, AttentionProblem(b, h, sq, sq, d, dtype=dtype, causal=causal))  # type: ignore[arg-type]
    with Runtime(config=config) as rt:
        outs = [
            rt.attention(q, k, v, causal=causal, scale=scale, return_lse=True) for _ in range(3)
        ]
        tiers = [r.tier for r in rt.history() if r.event == "call"]
        configs = [r.config for r in rt.history() if r.event == "call"]
    assert tiers == [1, 2, 3]
    assert configs[2] == TUNED.to_dict() and configs[1] != TUNED.to_dict()
    for tier, (o, lse) in zip(tiers, outs, strict=True):
        assert o.dtype == q.dtype and o.shape == q.shape and lse.shape == shape[:3]
        assert _rel_err(o, want_o) < TOLERANCE[dtype], f"tier {tier} output"
        assert _rel_err(lse, want_lse) < 1e-3, f"tier {tier} lse"
    assert _rel_err(outs[1][0], np.asarray(outs[2][0], np.float64)) < TOLERANCE[dtype]


def test_gemm_tiers_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 32)).astype(np.float16)
    b = rng.standard_normal((32, 64)).astype(np.float16)
    want = a.astype(np.float64) @ b.astype(np.float64)
    config = _runtime_config(tmp_path)
    problem = GemmProblem(64, 64, 32)
    tuned = TileConfig(block_m=32, block_n=32, block_k=32, num_warps=4, num_stages=2)
    _tuned_entry(tmp_path, problem, tuned)
    with Runtime(config=config) as rt:
        outs = [rt.gemm(a, b) for _ in range(3)]
        tiers = [r.tier for r in rt.history() if r.event == "call"]
    assert tiers == [1, 2, 3]
    for tier, c in zip(tiers, outs, strict=True):
        assert c.dtype == np.float16 and c.shape == (64, 64)
        assert _rel_err(c, want) < TOLERANCE["fp16"], f"tier {tier}"


def test_forced_config_on_the_emulator_runs_it_and_rejects_an_invalid_one() -> None:
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 1, 32, 32)).astype(np.float16) for _ in range(3))
    want, _ = _attention64(q, k, v, False, 1 / np.sqrt(32))
    forced = {
        "block_m": 32,
        "block_n": 32,
        "block_k": 16,
        "num_warps": 2,
        "num_stages": 1,
        "q_in_regs": 1,
    }
    with Runtime(device="emulator") as rt:
        out = rt.attention(q, k, v, config=forced)
        assert _rel_err(out, want) < TOLERANCE["fp16"]
        assert rt.history()[-1].config == forced
        with pytest.raises(ValueError, match="block_k=48"):
            rt.attention(q, k, v, config={**forced, "block_k": 48})
