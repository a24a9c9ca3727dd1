"""runtime.torch's autograd through the attention variants: gradients of q, k, v (GQA: k's and
v's own shapes) against float64 autograd of a plain-torch FlashAttention-2 reference, on the
emulator's compiled tier 2 and through tier 1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import runtime.torch as tt  # noqa: E402  (after the importorskip)
from runtime import Runtime, RuntimeConfig  # noqa: E402

# Normwise relative error against float64 autograd on the same rounded inputs: at most 4u
# (u = 2^-11 fp16, 2^-8 bf16), the forward's rule in tests/runtime/test_torch_ops.py.
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
TOLERANCE_U = 4
B, H, SQ, SKV, D = 2, 4, 77, 131, 32
# name: (heads_kv, causal, keywords of tt.attention); ALiBi slopes are drawn per test.
VARIANTS: dict[str, tuple[int, bool, dict[str, Any]]] = {
    "gqa": (2, False, {}),
    "mqa_causal": (1, True, {}),
    "window": (4, False, {"window_size": (20, 7)}),
    "window_causal": (4, True, {"window_size": (30, -1)}),
    "softcap": (4, False, {"softcap": 2.0}),
    "alibi": (4, True, {"alibi": "heads"}),
    "alibi_batch_heads": (4, False, {"alibi": "batch_heads"}),
    "bshd_gqa": (2, True, {"layout": "bshd"}),
}


@pytest.fixture
def rt(request: Any) -> Iterator[Runtime]:
    """`device` (the test's parameter): the emulator's compiled kernels from the second call
    (tier 2), or tier 1 on the CPU."""
    config = RuntimeConfig(
        device=request.node.callspec.params["device"], arch="sm_90", tier2_min_calls=1,
        tuning_workers=0,
    )  # fmt: skip
    with Runtime(config=config) as runtime:
        yield runtime


# Tier 1 runs every variant in both dtypes; the compiled kernels (two calls each on the
# emulator) a sample of them (GQA, bshd: tests/runtime/test_emulator_backward_variants.py).
CASES = [("cpu", name, dtype) for name in sorted(VARIANTS) for dtype in UNIT_ROUNDOFF]
CASES += [
    ("emulator", name, dtype)
    for name, dtype in (
        ("mqa_causal", torch.bfloat16),
        ("window_causal", torch.float16),
        ("softcap", torch.bfloat16),
        ("alibi_batch_heads", torch.float16),
    )
]


def reference(q: Any, k: Any, v: Any, causal: bool, options: dict[str, Any]) -> Any:
    """FlashAttention-2's variants in plain torch, [batch, heads, seq, d]."""
    group = q.shape[1] // k.shape[1]
    k, v = (x.repeat_interleave(group, 1) for x in (k, v))
    scores = q @ k.transpose(-1, -2) * D**-0.5
    if options.get("softcap"):
        cap = options["softcap"]
        scores = cap * torch.tanh(scores / cap)
    i, j = torch.arange(SQ)[:, None], torch.arange(SKV)[None, :]
    diagonal = i + SKV - SQ
    if options.get("alibi_slopes") is not None:
        slopes = options["alibi_slopes"].double()
        slopes = slopes[:, :, None, None] if slopes.ndim == 2 else slopes[None, :, None, None]
        scores = scores - slopes * (diagonal - j).abs()
    hidden = (j > diagonal) if causal else torch.zeros(SQ, SKV, dtype=torch.bool)
    left, right = options.get("window_size", (-1, -1))
    if left >= 0:
        hidden |= j < diagonal - left
    if right >= 0:
        hidden |= j > diagonal + right
    return torch.softmax(scores.masked_fill(hidden, -torch.inf), dim=-1) @ v


def _normwise(got: Any, want: Any) -> float:
    return float((got.detach().double() - want).norm() / want.norm())


def gradient_errors(
    rt: Runtime, name: str, dtype: Any, seed: int = 0, device: str = "cpu"
) -> dict[str, float]:
    """Normwise errors (in units of u) of out, dq, dk, dv for one variant; `device` holds the
    tensors the runtime gets (the float64 reference stays on the CPU)."""
    heads_kv, causal, options = VARIANTS[name]
    options = dict(options)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, SQ, D, generator=gen).to(dtype)
    k, v = (torch.randn(B, heads_kv, SKV, D, generator=gen).to(dtype) for _ in range(2))
    grad_o = torch.randn(B, H, SQ, D, generator=gen).to(dtype)
    alibi = options.pop("alibi", None)
    if alibi is not None:
        shape = (H,) if alibi == "heads" else (B, H)
        options["alibi_slopes"] = torch.rand(shape, generator=gen) * 0.5
    bshd = options.get("layout") == "bshd"

    def stored(x: Any) -> Any:  # bshd: [batch, seq, heads, d], by a real copy
        return x.transpose(1, 2).contiguous() if bshd else x

    ours = [stored(x).to(device).requires_grad_() for x in (q, k, v)]
    given = dict(options)
    if given.get("alibi_slopes") is not None:
        given["alibi_slopes"] = given["alibi_slopes"].to(device)
    out = tt.attention(*ours, causal=causal, runtime=rt, **given)
    out.backward(stored(grad_o).to(device))
    out = out.cpu()
    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    want = reference(*exact, causal, options)
    want.backward(grad_o.double())
    u = UNIT_ROUNDOFF[dtype]
    errors = {"out": _normwise(out.transpose(1, 2) if bshd else out, want) / u}
    for label, mine, ref in zip(("dq", "dk", "dv"), ours, exact, strict=True):
        assert mine.grad.dtype == dtype and mine.grad.shape == mine.shape, label
        assert mine.grad.device == mine.device, label
        grad = mine.grad.cpu()
        grad = grad.transpose(1, 2) if bshd else grad
        errors[label] = _normwise(grad, ref.grad) / u
    return errors


@pytest.mark.parametrize(("device", "name", "dtype"), CASES, ids=str)
def test_variant_gradients_match_float64_autograd(
    rt: Runtime, device: str, name: str, dtype: Any
) -> None:
    errors = gradient_errors(rt, name, dtype, seed=len(name))
    assert all(err <= TOLERANCE_U for err in errors.values()), errors
    if rt.device == "emulator":  # the second call runs the compiled backward (tier 2)
        errors = gradient_errors(rt, name, dtype, seed=len(name) + 1)
        assert all(err <= TOLERANCE_U for err in errors.values()), errors
        calls = [r for r in rt.history() if r.event == "call" and r.op == "attention_bwd"]
        assert [r.tier for r in calls] == [1, 2]


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_gradients_on_the_gpu_match_float64_autograd(name: str) -> None:
    """CUDA tensors on device='cuda': tier 1, then the compiled forward and backward (tier 2)."""
    config = RuntimeConfig(device="cuda", tier2_min_calls=1, tuning_workers=0)
    with Runtime(config=config) as cuda_rt:
        for seed in (len(name), len(name) + 1):
            errors = gradient_errors(cuda_rt, name, torch.float16, seed=seed, device="cuda")
            assert all(err <= TOLERANCE_U for err in errors.values()), (seed, errors)
        calls = [r for r in cuda_rt.history() if r.event == "call" and r.op == "attention_bwd"]
        assert [r.tier for r in calls] == [1, 2]
