"""runtime.torch: gradients against float64 autograd, torch.compile, SDPA differences, errors."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import runtime.torch as tt  # noqa: E402  (after the importorskip)
from runtime import Runtime, RuntimeConfig  # noqa: E402
from templates.attention.reference import attention_reference  # noqa: E402
from templates.attention_bwd.reference import attention_bwd_reference  # noqa: E402
from tessera_core.types import GemmProblem  # noqa: E402

# Normwise relative error against float64 autograd on the same (rounded) inputs, as the
# forward's verification states it: at most 4u (u = 2^-11 fp16, 2^-8 bf16). Measured through
# tier 1: at most 0.55u over 5 seeds and these shapes.
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
TOLERANCE_U = 4
# Shapes nothing was tuned on: ragged, causal, seq_q != seq_kv both ways (70 > 33: rows that
# see no key).
SHAPES = [(45, 45, False), (29, 83, True), (70, 33, True)]


@pytest.fixture
def rt() -> Iterator[Runtime]:
    with Runtime(device="cpu", config=RuntimeConfig(tuning_workers=0)) as runtime:
        yield runtime


def naive_attention(q: Any, k: Any, v: Any, causal: bool, scale: float) -> Any:
    """Softmax attention in plain torch, bottom-right causal; rows that see no key give 0."""
    seq_q, seq_kv = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-1, -2) * scale
    if causal:
        above = torch.arange(seq_kv)[None, :] > torch.arange(seq_q)[:, None] + seq_kv - seq_q
        scores = scores.masked_fill(above, -torch.inf)
    seen = ~torch.isneginf(scores).all(dim=-1, keepdim=True)
    return torch.softmax(scores.masked_fill(~seen, 0.0), dim=-1) * seen @ v


def _normwise(got: Any, want: Any) -> float:
    return float((got.detach().double() - want).norm() / want.norm())


def _inputs(dtype: Any, seq_q: int, seq_kv: int, seed: int = 0, head_dim: int = 32) -> list[Any]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, seq_q, head_dim, generator=gen).to(dtype)
    k, v = (torch.randn(2, 3, seq_kv, head_dim, generator=gen).to(dtype) for _ in range(2))
    return [q, k, v]


class ReferenceAttention(torch.autograd.Function):
    """The NumPy references (forward and backward) in float64, for gradcheck."""

    @staticmethod
    def forward(ctx: Any, q: Any, k: Any, v: Any, causal: bool) -> Any:
        arrays = [x.detach().numpy() for x in (q, k, v)]
        o, lse = attention_reference(*arrays, causal=causal, accum_dtype=np.float64)
        ctx.save_for_backward(q, k, v)
        ctx.o, ctx.lse, ctx.causal = o, lse, causal
        return torch.from_numpy(o)

    @staticmethod
    def backward(ctx: Any, grad_o: Any) -> Any:
        arrays = [x.detach().numpy() for x in ctx.saved_tensors]
        grads = attention_bwd_reference(
            *arrays, ctx.o, ctx.lse, grad_o.numpy(), causal=ctx.causal, accum_dtype=np.float64
        )
        return (*(torch.from_numpy(g) for g in grads), None)


@pytest.mark.parametrize("seq_q,seq_kv,causal", [(7, 11, True), (11, 7, True), (9, 9, False)])
def test_gradcheck_of_the_reference_path_in_float64(seq_q: int, seq_kv: int, causal: bool) -> None:
    gen = torch.Generator().manual_seed(seq_q * seq_kv)
    q = torch.randn(1, 2, seq_q, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v = (
        torch.randn(1, 2, seq_kv, 16, generator=gen, dtype=torch.float64, requires_grad=True)
        for _ in range(2)
    )
    assert torch.autograd.gradcheck(
        lambda q, k, v: ReferenceAttention.apply(q, k, v, causal), (q, k, v), atol=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("seq_q,seq_kv,causal", SHAPES)
def test_attention_gradients_match_float64_autograd(
    rt: Runtime, dtype: Any, seq_q: int, seq_kv: int, causal: bool
) -> None:
    q, k, v = _inputs(dtype, seq_q, seq_kv, seed=seq_q)
    grad_o = torch.randn(q.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
    ours = [x.clone().requires_grad_() for x in (q, k, v)]
    out = tt.attention(*ours, causal=causal, scale=0.2, runtime=rt)
    out.backward(grad_o)
    exact = [x.double().requires_grad_() for x in (q, k, v)]
    want = naive_attention(*exact, causal, 0.2)
    want.backward(grad_o.double())

    tolerance = TOLERANCE_U * UNIT_ROUNDOFF[dtype]
    assert out.dtype == dtype and _normwise(out, want.detach()) <= tolerance
    for name, mine, ref in zip("qkv", ours, exact, strict=True):
        assert mine.grad.dtype == dtype and mine.grad.shape == ref.shape
        assert torch.isfinite(mine.grad).all(), name
        assert _normwise(mine.grad, ref.grad) <= tolerance, name
    if seq_q > seq_kv and causal:  # rows that see no key: O = 0, zero gradient
        blind = seq_q - seq_kv
        assert (out[..., :blind, :] == 0).all() and (ours[0].grad[..., :blind, :] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_gemm_gradients_match_float64_autograd(rt: Runtime, dtype: Any) -> None:
    gen = torch.Generator().manual_seed(3)
    a, b = (
        torch.randn(37, 53, generator=gen).to(dtype),
        torch.randn(53, 19, generator=gen).to(dtype),
    )
    grad_c = torch.randn(37, 19, generator=gen).to(dtype)
    ours = [x.clone().requires_grad_() for x in (a, b)]
    out = tt.gemm(*ours, runtime=rt)
    out.backward(grad_c)
    exact = [x.double().requires_grad_() for x in (a, b)]
    (exact[0] @ exact[1]).backward(grad_c.double())
    tolerance = TOLERANCE_U * UNIT_ROUNDOFF[dtype]
    assert _normwise(out, exact[0].detach() @ exact[1].detach()) <= tolerance
    for mine, ref in zip(ours, exact, strict=True):
        assert mine.grad.dtype == dtype and _normwise(mine.grad, ref.grad) <= tolerance


@pytest.mark.parametrize("layout", ["nn", "nt", "tn", "tt"])
def test_gemm_layouts_train_through_the_emulated_kernels_without_copies(layout: str) -> None:
    # Every call, forward and both gradients, runs the generic GEMM kernel of its layout.
    gen = torch.Generator().manual_seed(9)
    m, n, k = 37, 19, 53
    a = torch.randn((k, m) if layout[0] == "t" else (m, k), generator=gen).half()
    b = torch.randn((n, k) if layout[1] == "t" else (k, n), generator=gen).half()
    grad_c = torch.randn(m, n, generator=gen).half()
    config = RuntimeConfig(tier2_min_calls=0, tier3=False, tuning_workers=0)
    with Runtime(device="emulator", config=config) as emulated:
        ours = [x.clone().requires_grad_() for x in (a, b)]
        out = tt.gemm(*ours, layout=layout, runtime=emulated)
        out.backward(grad_c)
        calls = [(r.tier, r.kernel_key) for r in emulated.history() if r.event == "call"]
        arch = emulated.arch
    exact = [x.double().requires_grad_() for x in (a, b)]
    ops = [x.t() if t == "t" else x for x, t in zip(exact, layout, strict=True)]
    (ops[0] @ ops[1]).backward(grad_c.double())
    tolerance = TOLERANCE_U * UNIT_ROUNDOFF[torch.float16]
    assert out.shape == (m, n) and _normwise(out, (ops[0] @ ops[1]).detach()) <= tolerance
    for mine, ref in zip(ours, exact, strict=True):
        assert mine.grad.shape == ref.shape and _normwise(mine.grad, ref.grad) <= tolerance
    assert [tier for tier, _ in calls] == [2, 2, 2]
    assert calls[0][1] == GemmProblem(m, n, k, layout=layout).generic_key(arch)  # type: ignore[arg-type]
    if layout == "nn":  # dA = dC Bᵀ and dB = Aᵀ dC read B and A as stored
        assert [key for _, key in calls[1:]] == [
            GemmProblem(m, k, n, layout="nt").generic_key(arch),
            GemmProblem(k, n, m, layout="tn").generic_key(arch),
        ]


def test_the_backward_runs_through_the_runtime_as_its_own_signature(rt: Runtime) -> None:
    q, k, v = (x.requires_grad_() for x in _inputs(torch.float16, 24, 40))
    tt.attention(q, k, v, causal=True, runtime=rt).sum().backward()  # an expanded grad_out
    calls = [(r.op, r.tier, r.shape) for r in rt.history() if r.event == "call"]
    assert calls == [("attention", 1, (2, 3, 24, 40, 32)), ("attention_bwd", 1, (2, 3, 24, 40, 32))]


def test_torch_compile_fullgraph_traces_both_ops_forward_and_backward(rt: Runtime) -> None:
    q, k, v = _inputs(torch.float16, 21, 35)
    gen = torch.Generator().manual_seed(5)
    w = (torch.randn(32, 16, generator=gen) / 8).to(torch.float16)

    def step(q: Any, k: Any, v: Any, w: Any) -> Any:
        o = tt.attention(q, k, v, causal=True, runtime=rt)
        flat = o.reshape(-1, o.shape[-1])
        return tt.gemm(flat, w, runtime=rt).float().square().mean()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    grads = []
    for fn in (step, compiled):
        args = [x.clone().requires_grad_() for x in (q, k, v, w)]
        loss = fn(*args)
        loss.backward()
        grads.append([loss.detach(), *(x.grad for x in args)])
    for eager, traced in zip(*grads, strict=True):
        torch.testing.assert_close(traced, eager, rtol=0, atol=0)
    ops = {r.op for r in rt.history() if r.event == "call"}
    assert ops == {"attention", "attention_bwd", "gemm"}


def test_emulated_forward_and_backward_kernels_train() -> None:
    config = RuntimeConfig(tier2_min_calls=0, tier3=False, tuning_workers=0)
    q, k, v = (x.requires_grad_() for x in _inputs(torch.float16, 19, 50, seed=4))
    with Runtime(device="emulator", config=config) as emulated:
        out = tt.attention(q, k, v, causal=True, runtime=emulated)
        out.float().square().sum().backward()
        calls = [(r.op, r.tier) for r in emulated.history() if r.event == "call"]
    assert calls == [("attention", 2), ("attention_bwd", 2)]  # both generic kernels
    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    want = naive_attention(*exact, True, 32**-0.5)
    want.square().sum().backward()
    tolerance = TOLERANCE_U * UNIT_ROUNDOFF[torch.float16]
    assert _normwise(out, want.detach()) <= tolerance
    for mine, ref in zip((q, k, v), exact, strict=True):
        assert _normwise(mine.grad, ref.grad) <= tolerance


def test_opcheck_schema_fake_autograd_and_aot_dispatch_of_every_op(rt: Runtime) -> None:
    handle = tt.handle_of(rt)
    q, k, v = (x.requires_grad_() for x in _inputs(torch.float16, 13, 21, head_dim=16))
    out, lse = tt.attention_fwd(q.detach(), k.detach(), v.detach(), True, None, handle)
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.randn(shape, generator=gen).to(torch.bfloat16) for shape in ((9, 16), (16, 5)))
    cases = [
        (tt.attention_fwd, (q, k, v, True, None, handle)),
        (tt.attention_bwd, (out, q.detach(), k.detach(), v.detach(), out, lse, True, 0.3, handle)),
        (tt.gemm_op, (a.requires_grad_(), b.requires_grad_(), "nn", handle)),
        (tt.gemm_op, (a.detach().t().contiguous().requires_grad_(), b, "tn", handle)),
    ]
    for op, args in cases:
        results = torch.library.opcheck(op, args)
        assert set(results.values()) == {"SUCCESS"}, (op, results)


def test_differences_from_sdpa_causal_alignment(rt: Runtime) -> None:
    F = torch.nn.functional
    q, k, v = (x.double() for x in _inputs(torch.float16, 16, 40))
    ours = tt.attention(*(x.half() for x in (q, k, v)), causal=True, runtime=rt).double()
    # Equal lengths: both alignments agree.
    square = tt.attention(
        *(x.half() for x in (q, k[..., :16, :], v[..., :16, :])), causal=True, runtime=rt
    )
    sdpa_square = F.scaled_dot_product_attention(q, k[..., :16, :], v[..., :16, :], is_causal=True)
    assert _normwise(square, sdpa_square) <= 4 * 2.0**-11
    # seq_q < seq_kv: ours is bottom-right, SDPA's is_causal top-left.
    bottom_right = torch.ones(16, 40, dtype=torch.bool).tril(diagonal=40 - 16)
    assert _normwise(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right)) <= (
        4 * 2.0**-11
    )
    assert _normwise(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True)) > 0.1
    # The documented top-left recipe: causal on the first seq_q keys.
    top_left = tt.attention(
        *(x.half() for x in (q, k[..., :16, :], v[..., :16, :])), causal=True, runtime=rt
    )
    assert torch.equal(top_left, square)
    # seq_q > seq_kv, top-left: the first seq_kv rows causal, the rest see every key.
    long_q, short_k, short_v = (x.double() for x in _inputs(torch.float16, 30, 12, seed=2))
    halves = [long_q[..., :12, :], long_q[..., 12:, :].contiguous()]
    recipe = torch.cat(
        [
            tt.attention(
                *(x.half() for x in (halves[0], short_k, short_v)), causal=True, runtime=rt
            ),
            tt.attention(*(x.half() for x in (halves[1], short_k, short_v)), runtime=rt),
        ],
        dim=-2,
    )
    sdpa_top_left = F.scaled_dot_product_attention(long_q, short_k, short_v, is_causal=True)
    assert _normwise(recipe, sdpa_top_left) <= 4 * 2.0**-11


def test_default_runtime_serves_runtime_none(rt: Runtime) -> None:
    tt.set_default_runtime(rt)
    try:
        tt.attention(*_inputs(torch.bfloat16, 8, 8))
        assert tt.default_runtime() is rt
        assert [r.op for r in rt.history()] == ["attention"]
    finally:
        tt.set_default_runtime(None)


BAD = {
    "float32 q": (lambda q, k, v: (q.float(), k, v), "q is torch.float32; expected"),
    "strided k": (lambda q, k, v: (q, k.transpose(-1, -2), v), r"k is not contiguous .* k\.cont"),
    "meta v": (lambda q, k, v: (q, k, v.to("meta")), "q, k, v must be on one device; v is on"),
    "list q": (lambda q, k, v: (q.tolist(), k, v), "q is a list; expected a torch.Tensor"),
    "head_dim": (lambda q, k, v: (q[..., :8].contiguous(), k, v), "k has shape"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tensors_are_one_line_value_errors_naming_them(rt: Runtime, case: str) -> None:
    spoil, message = BAD[case]
    with pytest.raises(ValueError, match=message) as info:
        tt.attention(*spoil(*_inputs(torch.float16, 16, 16)), runtime=rt)
    assert "\n" not in str(info.value)


def test_bad_arguments_are_one_line_value_errors(rt: Runtime) -> None:
    q, k, v = _inputs(torch.float16, 16, 16)
    with pytest.raises(ValueError, match="causal=1"):
        tt.attention(q, k, v, causal=1, runtime=rt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"scale='0\.1'"):
        tt.attention(q, k, v, scale="0.1", runtime=rt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runtime is a str"):
        tt.attention(q, k, v, runtime="cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"b must be \[K=32, N\]"):
        tt.gemm(q[0, 0].contiguous(), q[0, 0, :8].contiguous(), runtime=rt)


def test_a_dead_runtime_handle_is_a_clear_error() -> None:
    gone = Runtime(device="cpu", config=RuntimeConfig(tuning_workers=0))
    handle = tt.handle_of(gone)
    assert tt.handle_of(gone) == handle != tt.DEFAULT_HANDLE
    gone.close()
    del gone
    gc.collect()
    q, k, v = _inputs(torch.float16, 16, 16)
    with pytest.raises(ValueError, match=f"runtime handle {handle} names no live Runtime"):
        tt.attention_fwd(q, k, v, False, None, handle)


@pytest.mark.gpu
def test_cuda_tensors_run_on_the_device_without_copies() -> None:
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    with Runtime(device="cuda", config=RuntimeConfig(tuning_workers=0)) as cuda_rt:
        for dtype in (torch.float16, torch.bfloat16):
            q, k, v = (x.cuda().requires_grad_() for x in _inputs(dtype, 77, 130))
            out = tt.attention(q, k, v, causal=True, runtime=cuda_rt)
            out.float().square().sum().backward()
            assert out.is_cuda and q.grad is not None and q.grad.is_cuda
            exact = [x.detach().cpu().double().requires_grad_() for x in (q, k, v)]
            want = naive_attention(*exact, True, 32**-0.5)
            want.square().sum().backward()
            tolerance = TOLERANCE_U * UNIT_ROUNDOFF[dtype]
            assert _normwise(out.cpu(), want.detach()) <= tolerance
            for mine, ref in zip((q, k, v), exact, strict=True):
                assert _normwise(mine.grad.cpu(), ref.grad) <= tolerance
        with pytest.raises(ValueError, match="q is not contiguous"):
            tt.attention(q.detach().transpose(1, 2), k, v, runtime=cuda_rt)
