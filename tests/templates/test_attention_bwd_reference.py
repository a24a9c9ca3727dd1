"""The attention backward reference: finite differences, float64 autograd, masking, memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from templates.attention.reference import attention_reference
from templates.attention_bwd import reference
from templates.attention_bwd.reference import attention_bwd_preprocess, attention_bwd_reference

# (seq_q, seq_kv, causal): ragged, seq_q != seq_kv both ways, rows that see no key (53 > 37).
SHAPES = [(40, 40, False), (37, 53, True), (53, 37, True), (19, 70, False), (1, 70, True)]


def _inputs(seq_q: int, seq_kv: int, head_dim: int = 16, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed * 1000 + seq_q * 100 + seq_kv)
    q, do = (rng.standard_normal((2, 3, seq_q, head_dim)) for _ in range(2))
    k, v = (rng.standard_normal((2, 3, seq_kv, head_dim)) for _ in range(2))
    return q, k, v, do


def _gradients(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    do: np.ndarray,
    causal: bool,
    *,
    scale: float | None = None,
    block_kv: int | None = None,
) -> tuple[np.ndarray, ...]:
    o, lse = attention_reference(q, k, v, causal=causal, scale=scale, accum_dtype=np.float64)
    return attention_bwd_reference(
        q, k, v, o, lse, do, causal=causal, scale=scale, accum_dtype=np.float64, block_kv=block_kv
    )


@pytest.mark.parametrize("seq_q,seq_kv,causal", SHAPES)
def test_backward_reference_matches_central_finite_differences(
    seq_q: int, seq_kv: int, causal: bool
) -> None:
    # L(q, k, v) = sum(O * dO): its gradient is the backward of dO. A random direction's
    # central difference (error O(eps^2) ~ 1e-10) must match the analytic directional derivative.
    q, k, v, do = _inputs(seq_q, seq_kv)
    grads = _gradients(q, k, v, do, causal, block_kv=16)
    rng = np.random.default_rng(7)
    eps = 1e-5
    for index, grad in enumerate(grads):
        direction = rng.standard_normal(grad.shape)

        def loss(step: float, index: int = index, direction: np.ndarray = direction) -> float:
            args = [q, k, v]
            args[index] = args[index] + step * direction
            o, _ = attention_reference(*args, causal=causal, accum_dtype=np.float64)
            return float(np.sum(o * do))

        numeric = (loss(eps) - loss(-eps)) / (2 * eps)
        analytic = float(np.sum(grad * direction))
        assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), ("qkv"[index], numeric)


@pytest.mark.parametrize("seq_q,seq_kv,causal", SHAPES)
def test_backward_reference_matches_float64_autograd(seq_q: int, seq_kv: int, causal: bool) -> None:
    torch = pytest.importorskip("torch")
    q, k, v, do = _inputs(seq_q, seq_kv, seed=1)
    scale = 0.3
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    scores = tq @ tk.transpose(-1, -2) * scale
    if causal:
        above = torch.arange(seq_kv)[None, :] > torch.arange(seq_q)[:, None] + seq_kv - seq_q
        scores = scores.masked_fill(above, -torch.inf)
    # Rows that see no key: softmax of all -inf is NaN; the convention is O = 0, zero gradient.
    seen = ~torch.isneginf(scores).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(~seen, 0.0), dim=-1) * seen
    (probs @ tv).backward(torch.tensor(do))

    got = _gradients(q, k, v, do, causal, scale=scale)
    for name, mine, want in zip("qkv", got, (tq.grad, tk.grad, tv.grad), strict=True):
        want_np = want.numpy()
        err = np.linalg.norm(mine - want_np) / max(np.linalg.norm(want_np), 1e-300)
        assert err <= 1e-12, (name, err)


def test_rows_that_see_no_key_get_zero_gradients_and_no_nan() -> None:
    q, k, v, do = _inputs(53, 37)
    o, lse = attention_reference(q, k, v, causal=True, accum_dtype=np.float64)
    assert np.isneginf(lse).any()
    dq, dk, dv = attention_bwd_reference(q, k, v, o, lse, do, causal=True, accum_dtype=np.float64)
    blind = np.isneginf(lse)
    assert np.all(np.isfinite(dq)) and np.all(np.isfinite(dk)) and np.all(np.isfinite(dv))
    assert np.all(dq[blind] == 0.0)


def test_blocking_does_not_change_the_result() -> None:
    q, k, v, do = _inputs(37, 100)
    whole = _gradients(q, k, v, do, True, block_kv=100)
    blocked = _gradients(q, k, v, do, True, block_kv=7)
    for a, b in zip(whole, blocked, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_preprocess_is_rowsum_of_do_times_o() -> None:
    rng = np.random.default_rng(3)
    o, do = (rng.standard_normal((2, 5, 8)) for _ in range(2))
    delta = attention_bwd_preprocess(o, do, accum_dtype=np.float64)
    np.testing.assert_allclose(delta, (o * do).sum(-1), rtol=1e-14)


def test_default_accumulation_is_float32_from_half_inputs() -> None:
    q, k, v, do = (x.astype(np.float16) for x in _inputs(20, 30))
    o, lse = attention_reference(q, k, v)
    grads = attention_bwd_reference(q, k, v, o.astype(np.float16), lse, do)
    assert all(g.dtype == np.float32 for g in grads)
    want = _gradients(*(x.astype(np.float64) for x in (q, k, v, do)), False)
    for mine, exact in zip(grads, want, strict=True):
        assert np.linalg.norm(mine - exact) / np.linalg.norm(exact) < 2e-3


def test_backward_reference_rejects_mismatched_shapes() -> None:
    q, k, v, do = _inputs(8, 8)
    o, lse = attention_reference(q, k, v)
    with pytest.raises(ValueError, match="do not form an attention backward"):
        attention_bwd_reference(q, k, v, o, lse[..., :-1], do)
    with pytest.raises(ValueError, match="block_kv=0"):
        attention_bwd_reference(q, k, v, o, lse, do, block_kv=0)


def test_backward_reference_never_holds_the_full_score_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reference, "SCORE_BLOCK_BYTES", 1024 * 1024)
    rng = np.random.default_rng(2)
    seq, head_dim = 2048, 8
    q, k, v, do = (rng.standard_normal((1, 2, seq, head_dim)).astype(np.float32) for _ in range(4))
    o, lse = attention_reference(q, k, v, causal=True)
    full_scores_bytes = 2 * seq * seq * 4
    tracemalloc.start()
    try:
        attention_bwd_reference(q, k, v, o, lse, do, causal=True)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < full_scores_bytes / 4
