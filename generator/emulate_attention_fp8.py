"""FP8 e4m3 forward attention on the emulator: attention_sm90 on e4m3 q, k, v with per-tensor
descale factors, V transposed (and its keys permuted) on the host as the kernel reads it."""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np

from generator.emulator import EmulatedRun, render_problem, run_rendered
from templates.attention_sm90.fp8 import transpose_v
from tessera_core.types import FP8_DTYPE, AttentionProblem, TileConfig

E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
BF16 = np.dtype(ml_dtypes.bfloat16)
Descale = tuple[float, float, float]
NO_DESCALE: Descale = (1.0, 1.0, 1.0)


def fp8_bits(name: str, array: np.ndarray) -> np.ndarray:
    """The e4m3 codes of a float8_e4m3fn (or uint8 codes) array, row-major."""
    if array.dtype not in (E4M3, np.dtype(np.uint8)):
        raise TypeError(f"{name} has dtype {array.dtype}; expected ml_dtypes.float8_e4m3fn")
    return np.ascontiguousarray(array).view(np.uint8)


def run_attention_fp8_problem(
    problem: AttentionProblem,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    descale: Descale = NO_DESCALE,
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> EmulatedRun:
    """attention_sm90 on e4m3 q, k, v [B,H,S,128] (outputs o bf16 [B,H,Sq,128], lse f32)."""
    if problem.dtype != FP8_DTYPE:
        raise ValueError(f"problem.dtype={problem.dtype!r}: expected {FP8_DTYPE!r}")
    rendered = render_problem(problem, config, specialized=specialized, arch=arch)
    b, h, sq, d = problem.batch, problem.heads, problem.seq_q, problem.head_dim
    inputs = {
        "q": fp8_bits("q", q),
        "k": fp8_bits("k", k),
        "v": transpose_v(fp8_bits("v", v)),
    }
    return run_rendered(
        rendered,
        inputs=inputs,
        outputs={"o": ((b, h, sq, d), BF16), "lse": ((b, h, sq), np.dtype(np.float32))},
        scale=scale,
        params_extra={"descale": tuple(float(f) for f in descale)},
    )


def run_attention_fp8(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    descale: Descale = NO_DESCALE,
    causal: bool = False,
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """FP8 attention forward on the emulator: (O bf16 [B,H,Sq,D], LSE [B,H,Sq] f32) of
    softmax(dq dk q kᵀ · scale) (dv v), `descale` = (dq, dk, dv); sm_90a only (attention_sm90).

    Raises:
        InvalidConfigError: no attention_sm90 configuration serves the problem (or `config`'s).
        EmulatorError: the kernel faulted.
    """
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or q.shape[:2] != k.shape[:2]:
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape}: need [B,H,S,D] each")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q {q.shape}, k {k.shape}: head_dim differs")
    b, h, sq, d = q.shape
    problem = AttentionProblem(b, h, sq, k.shape[2], d, dtype=FP8_DTYPE, causal=bool(causal))
    run = run_attention_fp8_problem(
        problem, q, k, v, descale=descale, scale=scale, config=config, specialized=specialized,
        arch=arch,
    )  # fmt: skip
    return run.outputs["o"], run.outputs["lse"]
