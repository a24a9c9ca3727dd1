"""generator.emulator.run_attention / run_gemm: edge shapes against the float64 reference, config
validation, dtypes and determinism."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from generator import emulator, verify
from templates.attention.reference import attention_reference
from tessera_core.errors import InvalidConfigError
from tessera_core.types import AttentionProblem, GemmProblem

ARCH = "sm_90"
SMALL_ATTENTION = {
    "block_m": 32,
    "block_n": 32,
    "block_k": 16,
    "num_warps": 2,
    "num_stages": 2,
    "q_in_regs": 0,
}


def _check_attention(problem: AttentionProblem, config: dict[str, int] | None, seed: int) -> None:
    inputs = verify.random_inputs(problem, seed)
    o, lse = emulator.run_attention(
        inputs["q"], inputs["k"], inputs["v"], causal=problem.causal, config=config, arch=ARCH
    )
    assert o.dtype == inputs["q"].dtype and o.shape == inputs["q"].shape
    assert lse.dtype == np.float32 and lse.shape == inputs["q"].shape[:3]
    passed, rel, max_abs, reason = verify.compare(
        problem, {"o": o, "lse": lse}, verify.reference(problem, inputs)
    )
    assert passed, f"{problem} {config}: {reason} (rel {rel:.2e}, max abs {max_abs:.2e})"


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("seq", [1, 17, 63, 64, 65, 197])
def test_attention_edge_sequence_lengths(seq: int, head_dim: int) -> None:
    # One generic kernel per head_dim serves every length: built once, run for each.
    _check_attention(AttentionProblem(2, 3, seq, seq, head_dim), None, seed=seq)


@pytest.mark.parametrize(
    ("seq_q", "seq_kv"), [(1, 1), (17, 17), (65, 65), (197, 197), (17, 197), (197, 17), (64, 1)]
)
def test_attention_causal_with_equal_and_different_lengths(seq_q: int, seq_kv: int) -> None:
    # seq_q > seq_kv leaves rows that see no key: O = 0 and LSE = -inf, like the reference.
    problem = AttentionProblem(1, 2, seq_q, seq_kv, 64, causal=True)
    _check_attention(problem, SMALL_ATTENTION, seed=seq_q * 1000 + seq_kv)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_attention_non_causal_different_lengths_and_dtypes(dtype: str) -> None:
    _check_attention(AttentionProblem(2, 1, 63, 130, 128, dtype=dtype), None, seed=5)


def test_attention_scale_and_specialized_source() -> None:
    problem = AttentionProblem(1, 2, 40, 70, 64)
    inputs = verify.random_inputs(problem, 11)
    o, lse = emulator.run_attention(
        inputs["q"], inputs["k"], inputs["v"], scale=0.3, specialized=True, arch=ARCH
    )
    ref_o, ref_lse = attention_reference(
        inputs["q"], inputs["k"], inputs["v"], scale=0.3, accum_dtype=np.float64
    )
    err = np.linalg.norm(o.astype(np.float64) - ref_o) / np.linalg.norm(ref_o)
    assert err < verify.Tolerance.of("fp16").rel
    assert np.abs(lse - ref_lse).max() < verify.LSE_ABS_TOL


@pytest.mark.parametrize(
    ("m", "n", "k", "config"),
    [
        (67, 45, 93, None),
        (1, 8, 5, None),
        (130, 3, 200, None),
        # K smaller than block_k: the only k-tile is mostly zero-filled.
        (33, 40, 8, {"block_m": 32, "block_n": 32, "block_k": 64, "num_warps": 2, "num_stages": 2}),
    ],
)
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_gemm_ragged_shapes(
    m: int, n: int, k: int, config: dict[str, int] | None, dtype: str
) -> None:
    problem = GemmProblem(m, n, k, dtype=dtype)
    inputs = verify.random_inputs(problem, seed=m + n + k)
    c = emulator.run_gemm(inputs["a"], inputs["b"], config=config, arch=ARCH)
    assert c.dtype == inputs["a"].dtype and c.shape == (m, n)
    passed, rel, _, reason = verify.compare(problem, {"c": c}, verify.reference(problem, inputs))
    assert passed, f"{problem} {config}: {reason} (rel {rel:.2e})"


def test_invalid_config_names_the_rule() -> None:
    a = np.ones((32, 32), np.float16)
    bad = {"block_m": 48, "block_n": 32, "block_k": 16, "num_warps": 2, "num_stages": 2}
    with pytest.raises(InvalidConfigError, match="block_m=48"):
        emulator.run_gemm(a, a, config=bad, arch=ARCH)
    with pytest.raises(InvalidConfigError, match="missing block_n"):
        emulator.run_gemm(a, a, config={"block_m": 32}, arch=ARCH)


def test_inputs_are_checked() -> None:
    q = np.ones((1, 1, 8, 64), np.float16)
    with pytest.raises(ValueError, match="need q"):
        emulator.run_attention(q, q[:, :, :, :32], q)
    with pytest.raises(TypeError, match="share one dtype"):
        emulator.run_attention(q, q.astype(ml_dtypes.bfloat16), q)
    with pytest.raises(TypeError, match=r"float16 or ml_dtypes\.bfloat16"):
        emulator.run_gemm(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32))


def test_runs_are_deterministic() -> None:
    problem = AttentionProblem(1, 2, 65, 65, 64, causal=True)
    inputs = verify.random_inputs(problem, 2)
    first = emulator.run_attention(inputs["q"], inputs["k"], inputs["v"], causal=True, arch=ARCH)
    second = emulator.run_attention(inputs["q"], inputs["k"], inputs["v"], causal=True, arch=ARCH)
    for x, y in zip(first, second, strict=True):
        assert x.tobytes() == y.tobytes()
