"""Checks of attention backward kernels on the emulator: the forward's outputs as the backward's
inputs, float64 reference gradients, normwise errors in units of the dtype's roundoff u."""

from __future__ import annotations

import numpy as np

from generator import emulator
from templates.attention.reference import attention_reference
from templates.attention_bwd.reference import attention_bwd_reference
from tessera_core.types import AttentionBackwardProblem, TileConfig

UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}
# ||grad - ref||_2 / ||ref||_2 <= GRAD_TOL_ULPS * u for dQ, dK and dV. The kernel accumulates in
# fp32; the errors that survive are the rounding of P and dS to 16 bits as mma operands (<= u
# relative each, normwise <= 2u through the products) and the final rounding of dK and dV
# (<= u; dQ stays fp32). Measured: 0.4-0.6u. An indexing, masking or synchronisation bug, or
# a dropped term (D, LSE, an atomic), moves the error to O(1).
GRAD_TOL_ULPS = 8.0
GRADS = ("dq", "dk", "dv")


def backward_inputs(
    problem: AttentionBackwardProblem, seed: int | np.random.Generator
) -> dict[str, np.ndarray]:
    """Fresh q, k, v, do and the forward's o, lse (float64-accurate, o rounded to the dtype);
    `seed` may be a generator to draw from."""
    rng = np.random.default_rng(seed)
    dtype = emulator.NUMPY_DTYPES[problem.dtype]
    b, h, d = problem.batch, problem.heads, problem.head_dim

    def draw(seq: int) -> np.ndarray:
        return rng.standard_normal((b, h, seq, d)).astype(dtype)

    q, k, v, do = (
        draw(problem.seq_q),
        draw(problem.seq_kv),
        draw(problem.seq_kv),
        draw(problem.seq_q),
    )
    o, lse = attention_reference(q, k, v, causal=problem.causal, accum_dtype=np.float64)
    return {"q": q, "k": k, "v": v, "do": do, "o": o.astype(dtype), "lse": lse.astype(np.float32)}


def reference_grads(
    problem: AttentionBackwardProblem, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    grads = attention_bwd_reference(
        inputs["q"], inputs["k"], inputs["v"], inputs["o"], inputs["lse"], inputs["do"],
        causal=problem.causal, accum_dtype=np.float64,
    )  # fmt: skip
    return dict(zip(GRADS, grads, strict=True))


def grad_errors_ulps(
    problem: AttentionBackwardProblem,
    outputs: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
) -> dict[str, float]:
    """Normwise relative error of each gradient in units of u; inf where any element is not
    finite (a poisoned element the kernel never wrote)."""
    u = UNIT_ROUNDOFF[problem.dtype]
    errors = {}
    for name in GRADS:
        got = outputs[name].astype(np.float64)
        ref = expected[name]
        if not np.all(np.isfinite(got)):
            errors[name] = float("inf")
            continue
        errors[name] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref)) / u
    return errors


def emulated_errors(
    problem: AttentionBackwardProblem,
    config: TileConfig,
    *,
    seed: int = 0,
    specialized: bool = False,
    arch: str = "sm_90",
) -> dict[str, float]:
    """Run the kernel for `config` on fresh inputs; its gradients' errors in units of u."""
    inputs = backward_inputs(problem, seed)
    run = emulator.run_attention_backward_problem(
        problem, inputs, config=config, specialized=specialized, arch=arch
    )
    return grad_errors_ulps(problem, run.outputs, reference_grads(problem, inputs))
