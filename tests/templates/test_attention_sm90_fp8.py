"""attention_sm90 with FP8 e4m3 inputs: space, the permuted V^T, NVRTC/SASS (QGMMA), and the
emulator against float64 on the dequantized inputs within fp8.error_bound.

The bound (templates/attention_sm90/fp8.py) comes from e4m3's 3-bit mantissa: the kernel rounds
each probability to e4m3 (relative error at most 2^-4, zero-mean) before P V; twice the root
mean square that explains, relative to ||P V||, plus 2^-8 for O's rounding to bf16.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from generator import emulator
from generator.compile import CompiledKernel, compile_many
from generator.compile_cache import CompileCache
from generator.render import RenderedKernel, render
from generator.sass import instruction_counts
from templates.attention.reference import attention_reference
from templates.attention_sm90 import fp8, space
from templates.registry import get_family
from tessera_core.types import AttentionProblem, TileConfig

ARCH = "sm_90a"
FAMILY = get_family("attention_sm90")
RAGGED = AttentionProblem(1, 2, 136, 200, 128, dtype="e4m3")
CAUSAL = AttentionProblem(1, 2, 200, 136, 128, dtype="e4m3", causal=True)
BF16 = np.dtype(ml_dtypes.bfloat16)
LSE_TOLERANCE = 1e-4  # Q K^T of e4m3 values: exact products, fp32 sums


def tile(block_m: int, stages: int, pingpong: int) -> TileConfig:
    warps = 4 * (1 + block_m // 64)
    return TileConfig(block_m, 128, 64, warps, stages, (("pingpong", pingpong),))


def valid_configs(problem: AttentionProblem) -> list[TileConfig]:
    return FAMILY.space.valid_configs(problem, ARCH)


def test_fp8_space_takes_head_dim_128_and_128_key_tiles() -> None:
    configs = valid_configs(RAGGED)
    assert len(configs) == 9  # block_m 64 (no ping-pong) and 128, 2-4 stages; 192 spills
    assert {c.block_n for c in configs} == {128}
    head_64 = AttentionProblem(1, 2, 64, 64, 64, dtype="e4m3")
    assert FAMILY.space.unsupported(head_64, ARCH) == (
        "head_dim: head_dim=64: attention_sm90 serves e4m3 at head_dim 128"
    )
    assert FAMILY.space.violations(tile(128, 2, 1), RAGGED, ARCH) == []
    narrow = TileConfig(128, 64, 64, 12, 2)
    assert any("e4m3 takes 128" in r for r in FAMILY.space.violations(narrow, RAGGED, ARCH))
    assert space.smem_bytes(RAGGED, tile(128, 2, 1)) == 1024 + 128 * 128 + 2 * 2 * 128 * 128 + 56
    assert get_family("attention").space.unsupported(RAGGED, "sm_90") is not None


def test_key_order_is_the_accumulator_to_register_fragment_permutation() -> None:
    # A-register r of thread q, byte j holds wgmma column 16 (r // 2) + 4q + j; the accumulator
    # gives that thread keys 16 (r // 2) + 8 (j // 2) + 2q + j % 2 of the step.
    for q in range(4):
        for r in range(4):
            for j in range(4):
                column = 16 * (r // 2) + 4 * q + j
                assert fp8.KEY_ORDER[column] == 16 * (r // 2) + 8 * (j // 2) + 2 * q + j % 2
    assert sorted(fp8.KEY_ORDER) == list(range(32))


def test_transpose_v_permutes_each_step_and_pads_with_zeros() -> None:
    v = np.arange(2 * 40 * 128, dtype=np.int64).reshape(2, 40, 128) % 251 + 1
    vt = fp8.transpose_v(v.astype(np.uint8))
    assert vt.shape == (2, 128, 64)
    for step in range(2):
        for s in range(32):
            key = 32 * step + int(fp8.KEY_ORDER[s])
            want = v[:, key, :] if key < 40 else 0
            np.testing.assert_array_equal(vt[:, :, 32 * step + s], want)


def test_quantize_rounds_and_saturates_like_e4m3() -> None:
    x = np.array([0.0, 1.0, 1.0625, 1.1875, -3.3, 500.0, -1e9, 2.0**-9, 2.0**-11])
    bits = fp8.quantize(x)
    want = np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(bits, want)
    np.testing.assert_array_equal(fp8.dequantize(bits, 2.0), 2.0 * want.view(fp8.E4M3))
    assert fp8.dequantize(fp8.quantize(np.array([1e9])))[0] == 448.0


def compile_configs(problem: AttentionProblem, configs: list[TileConfig], root: Path) -> None:
    rendered = [render(FAMILY, problem, c, specialized=False, arch=ARCH) for c in configs]
    results = compile_many(rendered, arch=ARCH, cache=CompileCache(root=root), executor="thread")
    for config, result in zip(configs, results, strict=True):
        assert isinstance(result, CompiledKernel), result
        assert result.resources.spill_store_bytes == 0, config
        assert result.resources.spill_load_bytes == 0, config
        counts = instruction_counts(result.cubin)
        for opcode in ("QGMMA", "UTMALDG", "SYNCS"):
            assert counts.get(opcode, 0) > 0, (opcode, config)
        assert counts.get("HGMMA", 0) == 0, config  # every wgmma is the FP8 one


def test_fp8_compiles_to_qgmma_without_spills(tmp_path: Path) -> None:
    compile_configs(CAUSAL, [tile(128, 2, 1)], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("config", valid_configs(CAUSAL), ids=str)
def test_every_valid_fp8_config_compiles_to_qgmma_without_spills(
    config: TileConfig, tmp_path: Path
) -> None:
    compile_configs(CAUSAL, [config], tmp_path)


DESCALE = (0.5, 0.25, 2.0)


def run(
    rendered: RenderedKernel,
    problem: AttentionProblem,
    seed: int,
    *,
    descale: tuple[float, float, float] = DESCALE,
    permute: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(O, LSE, the dequantized inputs) of one emulated run on fresh e4m3 inputs."""
    rng = np.random.default_rng(seed)
    shapes = {"q": problem.seq_q, "k": problem.seq_kv, "v": problem.seq_kv}
    bits = {
        name: fp8.quantize(rng.standard_normal((1, 2, seq, 128)), factor)
        for (name, seq), factor in zip(shapes.items(), descale, strict=True)
    }
    vt = fp8.transpose_v(bits["v"])
    if not permute:  # a plain transpose: the keys of each step in their natural order
        vt = np.zeros_like(vt)
        vt[..., : problem.seq_kv] = np.swapaxes(bits["v"], -1, -2)
    outputs = {"o": ((1, 2, problem.seq_q, 128), BF16), "lse": ((1, 2, problem.seq_q), np.float32)}
    result = emulator.run_rendered(
        rendered,
        inputs={"q": bits["q"], "k": bits["k"], "v": vt},
        outputs=outputs,
        params_extra={"descale": descale},
    )
    values = {
        name: fp8.dequantize(b, factor)
        for (name, b), factor in zip(bits.items(), descale, strict=True)
    }
    return result.outputs["o"].astype(np.float64), result.outputs["lse"], values


def check(problem: AttentionProblem, config: TileConfig, seed: int, **options: object) -> float:
    """O's relative error over its bound; asserts the LSE, the empty rows and no NaN."""
    rendered = render(FAMILY, problem, config, specialized=False, arch=ARCH)
    o, lse, x = run(rendered, problem, seed, **options)  # type: ignore[arg-type]
    want_o, want_lse = attention_reference(
        x["q"], x["k"], x["v"], causal=problem.causal, accum_dtype=np.float64
    )
    assert not np.isnan(o).any()
    empty = np.isneginf(want_lse)
    assert (np.isneginf(lse) == empty).all() and (o[empty] == 0).all()
    assert np.abs(lse[~empty] - want_lse[~empty]).max() < LSE_TOLERANCE
    scale = 128**-0.5
    bound = fp8.error_bound(x["q"], x["k"], x["v"], causal=problem.causal, scale=scale)
    return float(np.linalg.norm(o - want_o) / np.linalg.norm(want_o)) / bound


SWEEP = [
    pytest.param(
        causal,
        c,
        marks=() if (i, causal) in ((4, False), (7, True)) else (pytest.mark.slow,),
        id=f"{'causal' if causal else 'ragged'}-{c.block_m}-s{c.num_stages}"
        f"-pp{int(space.pingpong(c))}",
    )
    for causal in (False, True)
    for i, c in enumerate(valid_configs(RAGGED))
]


@pytest.mark.parametrize(("causal", "config"), SWEEP)
def test_every_valid_fp8_config_is_within_the_e4m3_bound(causal: bool, config: TileConfig) -> None:
    assert check(CAUSAL if causal else RAGGED, config, seed=21 + int(causal)) < 1.0


def test_without_descale_factors_too() -> None:
    assert check(RAGGED, tile(64, 2, 0), seed=5, descale=(1.0, 1.0, 1.0)) < 1.0


def test_v_transposed_without_the_key_permutation_is_caught() -> None:
    assert check(RAGGED, tile(64, 2, 0), seed=5, permute=False) > 1.0
