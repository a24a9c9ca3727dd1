"""The device check's backward stage: our attention_bwd kernel against float64 torch autograd on
the GPU, and its time beside SDPA's flash backward (FlashAttention-2) at 8x16x2048x{64,128}.

TFLOP/s of a backward count 2.5x the forward's FLOPs (4 * b * h * s_q * s_kv * d, halved when
causal), FlashAttention-2's convention (AttentionBackwardProblem.flops): five matrix products
where the forward has two. Our time includes zeroing the fp32 dQ (atomic mode) and rounding it
to the input dtype, as FlashAttention-2's backward includes its dQ accumulator's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from device_stages import OurKernel, _arch, _median_ms, _tflops

from tessera_core.types import AttentionBackwardProblem, TileConfig

# Ragged, seq_q != seq_kv both ways (bottom-right causal: rows that see no key when
# seq_q > seq_kv), both dtypes, head_dim 64 and 128.
CHECK_SHAPES = (
    AttentionBackwardProblem(2, 4, 1000, 777, 64, dtype="fp16", causal=True),
    AttentionBackwardProblem(2, 4, 777, 1000, 128, dtype="bf16", causal=True),
    AttentionBackwardProblem(2, 4, 1000, 1000, 64, dtype="bf16", causal=False),
    AttentionBackwardProblem(1, 4, 513, 1031, 128, dtype="fp16", causal=False),
)
TIMING_SHAPES = tuple(
    AttentionBackwardProblem(8, 16, 2048, 2048, d, dtype="fp16", causal=causal)
    for d in (64, 128)
    for causal in (False, True)
)
POINTERS = ("q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv")


def _configs(problem: AttentionBackwardProblem, arch: str) -> list[TileConfig]:
    """The family's default (atomic dQ), its deterministic twin, and at head_dim above 64 the
    deterministic 64 x 64 tile (space.SPILL_FREE_ABOVE_BUDGET), when valid."""
    from templates.attention_bwd import space

    default = space.default_config(problem, arch)
    twin = space.tile(
        default.block_m,
        default.block_n,
        default.num_warps,
        default.num_stages,
        1 - space.deterministic(default),
    )
    wide = space.tile(64, 64, 4, 1, 1)
    candidates = [default, twin, wide] if problem.head_dim > 64 else [default, twin]
    valid = [c for c in candidates if not space.SPACE.violations(c, problem, arch)]
    return list(dict.fromkeys(valid))


def _inputs(problem: AttentionBackwardProblem, seed: int) -> dict[str, Any]:
    """q, k, v, dO in the dtype, O and LSE from a float64 forward (O rounded), the gradient
    buffers poisoned with NaN, and the float64 autograd gradients as 'want_*'."""
    import torch

    gen = torch.Generator(device="cuda").manual_seed(seed)
    dtype = torch.float16 if problem.dtype == "fp16" else torch.bfloat16
    b, h, d = problem.batch, problem.heads, problem.head_dim

    def draw(seq: int) -> Any:
        return torch.randn(b, h, seq, d, device="cuda", generator=gen).to(dtype)

    q, k, v, do = (
        draw(problem.seq_q),
        draw(problem.seq_kv),
        draw(problem.seq_kv),
        draw(problem.seq_q),
    )
    wide = [x.double().requires_grad_() for x in (q, k, v)]
    scores = wide[0] @ wide[1].transpose(-1, -2) / d**0.5
    if problem.causal:
        keep = torch.ones(problem.seq_q, problem.seq_kv, device="cuda", dtype=torch.bool)
        scores = scores.masked_fill(~keep.tril(problem.seq_kv - problem.seq_q), float("-inf"))
    lse = torch.logsumexp(scores, -1)
    seen = torch.isfinite(lse)[..., None]  # rows that see no key: O = 0, zero gradients
    probs = torch.where(seen, torch.exp(scores - lse[..., None].where(seen, 0.0)), 0.0)
    out = probs @ wide[2]
    want = torch.autograd.grad(out, wide, do.double())
    nan = float("nan")
    return {
        "q": q,
        "k": k,
        "v": v,
        "o": out.detach().to(dtype),
        "lse": lse.detach().float(),
        "dout": do,
        "dq": torch.full(q.shape, nan, device="cuda"),  # fp32 accumulator
        "dk": torch.full(k.shape, nan, device="cuda", dtype=dtype),
        "dv": torch.full(v.shape, nan, device="cuda", dtype=dtype),
        **{f"want_{n}": g for n, g in zip(("dq", "dk", "dv"), want, strict=True)},
    }


def _backward(problem: AttentionBackwardProblem, config: TileConfig, arch: str, t: dict) -> Any:
    """A callable running our backward once: zero dQ (atomic mode), launch, round dQ."""
    from templates.attention_bwd.space import deterministic

    kernel = OurKernel(problem, config, arch, {n: t[n] for n in POINTERS})
    atomic = not deterministic(config)

    def run() -> Any:
        if atomic:
            t["dq"].zero_()
        kernel()
        return t["dq"].to(t["q"].dtype)

    return run


def _check_row(problem: AttentionBackwardProblem, config: TileConfig, arch: str) -> dict:
    import torch

    from generator.grad_check import GRAD_TOL_ULPS, UNIT_ROUNDOFF

    tensors = _inputs(problem, seed=1)
    dq = _backward(problem, config, arch, tensors)()
    torch.cuda.synchronize()
    bound = GRAD_TOL_ULPS * UNIT_ROUNDOFF[problem.dtype]
    errors = {}
    for name, got in (("dq", dq), ("dk", tensors["dk"]), ("dv", tensors["dv"])):
        want = tensors[f"want_{name}"]
        errors[name] = ((got.double() - want).norm() / want.norm()).item()  # NaN if unwritten
    passed = all(err <= bound for err in errors.values())
    return {"rel_err": errors, "tolerance": bound, "passed": passed}


def _sdpa_flash_backward_ms(problem: AttentionBackwardProblem, flush: Any) -> float | None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shape_q = (problem.batch, problem.heads, problem.seq_q, problem.head_dim)
    shape_kv = (problem.batch, problem.heads, problem.seq_kv, problem.head_dim)
    q = torch.randn(shape_q, device="cuda", dtype=torch.float16, requires_grad=True)
    k, v = (
        torch.randn(shape_kv, device="cuda", dtype=torch.float16, requires_grad=True)
        for _ in range(2)
    )
    grad_out = torch.randn(shape_q, device="cuda", dtype=torch.float16)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=problem.causal)

        def backward() -> None:
            torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True)

        return _median_ms(backward, flush)
    except RuntimeError:  # the flash backend refuses this shape or GPU
        return None


def stage_backward(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Correctness of the default backward configurations on ragged shapes, then timings."""
    import torch

    arch = _arch(dry_run)
    checks = []
    for problem in CHECK_SHAPES:
        for config in _configs(problem, arch):
            row: dict[str, Any] = {"problem": problem.shape_str(), "dtype": problem.dtype}
            row.update(causal=problem.causal, config=str(config))
            try:
                row.update(_check_row(problem, config, arch))
            except Exception as exc:
                row.update(passed=False, error=f"{type(exc).__name__}: {exc}"[:300])
            checks.append(row)
            (work / "backward.json").write_text(json.dumps({"checks": checks}))
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    timings = []
    for problem in TIMING_SHAPES:
        sdpa_ms = _sdpa_flash_backward_ms(problem, flush)
        best: dict[str, Any] = {}
        for config in _configs(problem, arch):
            try:
                tensors = _inputs_for_timing(problem)
                ms = _median_ms(_backward(problem, config, arch, tensors), flush)
            except Exception as exc:
                best.setdefault("errors", []).append(f"{config}: {type(exc).__name__}: {exc}"[:200])
                continue
            if "ours_ms" not in best or ms < best["ours_ms"]:
                best.update(ours_ms=ms, config=str(config))
        row = {"problem": problem.shape_str(), "causal": problem.causal, **best}
        row["sdpa_flash_ms"] = sdpa_ms
        if "ours_ms" in best:
            row["ours_tflops"] = _tflops(problem, best["ours_ms"])
        if sdpa_ms:
            row["sdpa_flash_tflops"] = _tflops(problem, sdpa_ms)
            if "ours_ms" in best:
                row["speedup_vs_flash"] = sdpa_ms / best["ours_ms"]
        timings.append(row)
        (work / "backward.json").write_text(json.dumps({"checks": checks, "timings": timings}))
    return {
        "checks": checks,
        "passed": sum(r["passed"] for r in checks),
        "total": len(checks),
        "timings": timings,
        "flops_convention": "2.5 x forward (FlashAttention-2's backward count)",
    }


def _inputs_for_timing(problem: AttentionBackwardProblem) -> dict[str, Any]:
    """Random tensors of the timed shape (no float64 reference: 8x16x2048 is too large for it);
    LSE of plausible magnitude so exp stays finite."""
    import torch

    dtype = torch.float16
    b, h, sq, skv, d = (
        problem.batch,
        problem.heads,
        problem.seq_q,
        problem.seq_kv,
        problem.head_dim,
    )
    q = torch.randn(b, h, sq, d, device="cuda", dtype=dtype)
    return {
        "q": q,
        "k": torch.randn(b, h, skv, d, device="cuda", dtype=dtype),
        "v": torch.randn(b, h, skv, d, device="cuda", dtype=dtype),
        "o": torch.randn(b, h, sq, d, device="cuda", dtype=dtype),
        "lse": torch.full((b, h, sq), math.log(skv) + 0.5, device="cuda"),
        "dout": torch.randn(b, h, sq, d, device="cuda", dtype=dtype),
        "dq": torch.zeros(b, h, sq, d, device="cuda"),
        "dk": torch.empty(b, h, skv, d, device="cuda", dtype=dtype),
        "dv": torch.empty(b, h, skv, d, device="cuda", dtype=dtype),
    }
