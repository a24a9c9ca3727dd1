"""Runs the attention backward kernel (attention_bwd) on the CPU emulator: dQ, dK, dV."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from generator.emulator import (
    EmulatedRun,
    attention_problem,
    contiguous,
    render_problem,
    run_rendered,
)
from generator.render import RenderedKernel
from tessera_core.types import AttentionBackwardProblem, Layout, TileConfig


def run_attention_backward_problem(
    problem: AttentionBackwardProblem,
    tensors: Mapping[str, np.ndarray],
    *,
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> EmulatedRun:
    """Render the attention backward kernel for `problem` and run it (outputs dq, dk, dv).

    `tensors` holds q, k, v, o, do (in the problem's dtype and layout), lse (float32) as the
    forward produced them, and alibi_slopes (float32) when the problem has ALiBi. dq comes back
    in float32 and q's shape; dk and dv in the input dtype and k's shape (GQA: heads_kv heads).
    """
    rendered = render_problem(problem, config, specialized=specialized, arch=arch)
    return run_rendered_backward(rendered, problem, tensors, scale=scale)


def run_rendered_backward(
    rendered: RenderedKernel,
    problem: AttentionBackwardProblem,
    tensors: Mapping[str, np.ndarray],
    *,
    scale: float | None = None,
) -> EmulatedRun:
    """Run an already rendered attention backward kernel (run_attention_backward_problem's
    tensors and outputs); the planted-defect tests run edited sources through it."""
    from templates.attention.family import ALIBI_POINTER, tensor_shapes
    from templates.attention_bwd.space import deterministic

    missing = [n for n in ("q", "k", "v", "o", "lse", "do") if n not in tensors]
    if missing:
        raise ValueError(f"attention backward tensors: missing {missing}")
    q, k = tensors["q"], tensors["k"]
    inputs = {n: contiguous(tensors[n]) for n in ("q", "k", "v", "o")}
    inputs["lse"] = contiguous(np.asarray(tensors["lse"], dtype=np.float32))
    inputs["dout"] = contiguous(tensors["do"])
    shapes = tensor_shapes(problem)
    for name in ("q", "k", "v", "o", "do"):
        expected = shapes["o" if name == "do" else name]
        if tensors[name].shape != expected:
            raise ValueError(f"{name} has shape {tensors[name].shape}; expected {expected}")
    if ALIBI_POINTER in shapes:
        slopes = tensors.get(ALIBI_POINTER)
        if slopes is None or np.shape(slopes) != shapes[ALIBI_POINTER]:
            raise ValueError(
                f"alibi_slopes: expected float32 of shape {shapes[ALIBI_POINTER]} for "
                f"alibi={problem.alibi!r}, got {None if slopes is None else np.shape(slopes)}"
            )
        inputs[ALIBI_POINTER] = contiguous(np.asarray(slopes, dtype=np.float32))
    return run_rendered(
        rendered,
        inputs=inputs,
        outputs={
            "dq": (q.shape, np.dtype(np.float32)),
            "dk": (k.shape, k.dtype),
            "dv": (k.shape, k.dtype),
        },
        scale=scale,
        accumulators=() if deterministic(rendered.config) else ("dq",),
    )


def run_attention_backward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    o: np.ndarray,
    lse: np.ndarray,
    do: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: np.ndarray | None = None,
    layout: Layout = "bhsd",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attention backward on the emulator: (dQ like q, dK like k, dV like v), in the input dtype.

    dQ, accumulated in fp32 by the kernel (zeroed first when it adds atomically), is rounded to
    the input dtype once, here. The variants are the forward's (run_attention); with GQA, dK
    and dV are summed over each KV head's query heads.

    Raises:
        InvalidConfigError: `config` is not valid for this problem.
        EmulatorError: the kernel faulted.
    """
    fwd = attention_problem(
        q, k, v, causal=causal, window_size=window_size, softcap=softcap,
        alibi_slopes=alibi_slopes, layout=layout,
    )  # fmt: skip
    problem = AttentionBackwardProblem(
        **{field.name: getattr(fwd, field.name) for field in dataclasses.fields(fwd)}
    )
    tensors = {"q": q, "k": k, "v": v, "o": o, "lse": lse, "do": do}
    if alibi_slopes is not None:
        tensors["alibi_slopes"] = alibi_slopes
    run = run_attention_backward_problem(
        problem, tensors, scale=scale, config=config, specialized=specialized, arch=arch
    )
    dq = run.outputs["dq"].astype(q.dtype)
    return dq, run.outputs["dk"], run.outputs["dv"]
