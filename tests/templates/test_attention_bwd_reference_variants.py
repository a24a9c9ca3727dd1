"""The attention backward reference's variants against float64 autograd of a direct PyTorch
implementation of FlashAttention-2's semantics (GQA, windows, softcap, ALiBi, bshd)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from templates.attention.reference import attention_reference
from templates.attention_bwd.reference import attention_bwd_reference

B, H, SQ, SKV, D = 2, 4, 13, 21, 16
# (causal, window, softcap, alibi, heads_kv)
CASES = [
    (False, (-1, -1), 0.0, None, 2),
    (True, (5, -1), 0.0, None, 1),
    (False, (7, 3), 2.0, "heads", 4),
    (True, (-1, -1), 0.0, "batch_heads", 2),
    (False, (10, 0), 1.5, "batch_heads", 4),
]


def _torch_attention(torch: Any, q: Any, k: Any, v: Any, case: tuple, slopes: Any) -> Any:
    causal, (left, right), softcap, _, heads_kv = case
    k, v = (x.repeat_interleave(H // heads_kv, 1) for x in (k, v))
    scores = q @ k.transpose(-1, -2) * D**-0.5
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    i, j = torch.arange(SQ)[:, None], torch.arange(SKV)[None, :]
    diagonal = i + SKV - SQ
    if slopes is not None:
        s = torch.as_tensor(slopes)
        s = s[None, :, None, None] if s.ndim == 1 else s[:, :, None, None]
        scores = scores - s * (diagonal - j).abs()
    hidden = torch.zeros(SQ, SKV, dtype=torch.bool)
    if causal:
        hidden |= j > diagonal
    if left >= 0:
        hidden |= j < diagonal - left
    if right >= 0:
        hidden |= j > diagonal + right
    probs = torch.softmax(scores.masked_fill(hidden, -torch.inf), dim=-1).nan_to_num(0.0)
    return probs @ v


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
def test_variant_gradients_match_float64_autograd(case: tuple, layout: str) -> None:
    torch = pytest.importorskip("torch")
    causal, window, softcap, alibi, heads_kv = case
    rng = np.random.default_rng(len(str(case)))
    q, do = (rng.standard_normal((B, H, SQ, D)) for _ in range(2))
    k, v = (rng.standard_normal((B, heads_kv, SKV, D)) for _ in range(2))
    slopes = {None: None, "heads": rng.random(H), "batch_heads": rng.random((B, H))}[alibi]
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    _torch_attention(torch, tq, tk, tv, case, slopes).backward(torch.tensor(do))

    options: dict[str, Any] = {"causal": causal, "window_size": window, "softcap": softcap}
    options.update(alibi_slopes=slopes, accum_dtype=np.float64)
    o, lse = attention_reference(q, k, v, **options)
    if layout == "bshd":  # the same problem, stored [batch, seq, heads, d]

        def swap(x: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.swapaxes(x, 1, 2))

        grads = attention_bwd_reference(
            swap(q), swap(k), swap(v), swap(o), lse, swap(do), layout="bshd", **options
        )
        grads = tuple(swap(g) for g in grads)
    else:
        grads = attention_bwd_reference(q, k, v, o, lse, do, **options)
    for name, mine, want in zip("qkv", grads, (tq.grad, tk.grad, tv.grad), strict=True):
        assert mine.shape == want.shape, name
        err = np.linalg.norm(mine - want.numpy()) / np.linalg.norm(want.numpy())
        assert err <= 1e-12, (name, err)
