"""Checks of attention backward kernels on the emulator: the forward's outputs as the backward's
inputs, float64 reference gradients, normwise errors in units of the dtype's roundoff u."""

from __future__ import annotations

from typing import Any

import numpy as np

from generator import emulate_backward, emulator
from templates.attention.family import ALIBI_POINTER, tensor_shapes
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
    """Fresh q, k, v, do (and alibi_slopes with ALiBi) in the problem's shapes and layout, and
    the forward's o, lse (float64-accurate, o rounded to the dtype); `seed` may be a generator."""
    rng = np.random.default_rng(seed)
    dtype = emulator.NUMPY_DTYPES[problem.dtype]
    shapes = tensor_shapes(problem)
    q, k, v, do = (rng.standard_normal(shapes[n]).astype(dtype) for n in ("q", "k", "v", "o"))
    inputs = {"q": q, "k": k, "v": v, "do": do}
    if ALIBI_POINTER in shapes:  # FA2's slopes for 8 heads span 2^-1 .. 2^-8
        inputs[ALIBI_POINTER] = rng.uniform(2.0**-8, 0.5, shapes[ALIBI_POINTER]).astype(np.float32)
    o, lse = attention_reference(
        q, k, v, accum_dtype=np.float64, **variant_options(problem, inputs)
    )
    return {**inputs, "o": o.astype(dtype), "lse": lse.astype(np.float32)}


def variant_options(
    problem: AttentionBackwardProblem, inputs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The problem's mask and variants as keywords of the references (GQA follows from k)."""
    return {
        "causal": problem.causal,
        "window_size": (problem.window_left, problem.window_right),
        "softcap": problem.softcap,
        "alibi_slopes": inputs.get(ALIBI_POINTER),
        "layout": problem.layout,
    }


def reference_grads(
    problem: AttentionBackwardProblem, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    grads = attention_bwd_reference(
        inputs["q"], inputs["k"], inputs["v"], inputs["o"], inputs["lse"], inputs["do"],
        accum_dtype=np.float64, **variant_options(problem, inputs),
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
    run = emulate_backward.run_attention_backward_problem(
        problem, inputs, config=config, specialized=specialized, arch=arch
    )
    return grad_errors_ulps(problem, run.outputs, reference_grads(problem, inputs))
