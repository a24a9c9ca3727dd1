"""attention_sm90 (FlashAttention-3-style, TMA + wgmma, ping-pong) for sm_90a: space, NVRTC/SASS,
emulator against float64, planted defects.

Configurations compile for sm_90a with no spills into SASS holding HGMMA, UTMALDG and SYNCS, and
run on the emulator at ragged and causal shapes against the float64 reference under both
schedules (which run_rendered requires to agree bit for bit). A sample runs by default; every
valid configuration runs with `-m slow`. Planted defects in the pipeline must be caught.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from generator import emulator, verify
from generator.compile import CompiledKernel, compile_many
from generator.compile_cache import CompileCache
from generator.render import RenderedKernel, render
from generator.sass import instruction_counts
from templates.attention.reference import attention_reference
from templates.attention_sm90 import space
from templates.registry import get_family
from templates.tma import TensorMap3D
from tessera_core.errors import EmulatorError, InvalidConfigError
from tessera_core.types import AttentionProblem, TileConfig

ARCH = "sm_90a"
FAMILY = get_family("attention_sm90")
# Ragged: neither sequence is a multiple of any tile, so the last Q and K/V boxes hang over a
# head's end (TMA zero fill; keys masked); two heads so a box past head 0 must not read head 1.
RAGGED = {d: AttentionProblem(1, 2, 136, 200, d) for d in space.HEAD_DIMS}
# Causal with more queries than keys: the first rows see no key (O = 0, LSE = -inf).
CAUSAL = {d: AttentionProblem(1, 2, 200, 136, d, causal=True) for d in space.HEAD_DIMS}


def tile(block_m: int, block_n: int, stages: int, pingpong: int) -> TileConfig:
    warps = 4 * (1 + block_m // 64)
    return TileConfig(block_m, block_n, 64, warps, stages, (("pingpong", pingpong),))


CONFIG = tile(128, 64, 2, 1)  # two consumers taking turns


def valid_configs(problem: AttentionProblem) -> list[TileConfig]:
    return FAMILY.space.valid_configs(problem, ARCH)


def test_space_keeps_sm90a_head_dims_and_whole_warpgroups() -> None:
    assert len(valid_configs(RAGGED[64])) == 33
    assert len(valid_configs(RAGGED[128])) == 22
    assert FAMILY.space.violations(CONFIG, RAGGED[64], "sm_90") == [
        "sm_90a: attention_sm90 runs on sm_90a only (wgmma, setmaxnreg), not sm_90"
    ]
    reasons = FAMILY.space.violations(CONFIG, AttentionProblem(1, 2, 64, 64, 96), ARCH)
    assert reasons and "head_dim=96: attention_sm90 serves 64, 128" in reasons[0]
    one_consumer_pingpong = tile(64, 64, 2, 1)
    assert any(
        "pingpong=1 needs at least two consumer" in r
        for r in FAMILY.space.violations(one_consumer_pingpong, RAGGED[64], ARCH)
    )
    mismatched = TileConfig(128, 64, 64, 8, 2)
    assert any(
        "block_m must be 64" in r for r in FAMILY.space.violations(mismatched, RAGGED[64], ARCH)
    )
    spills = tile(192, 128, 2, 0)  # 160 fragment registers under setmaxnreg 160: spills
    assert any(
        "160 fragment registers per consumer thread > 120" in r
        for r in FAMILY.space.violations(spills, RAGGED[128], ARCH)
    )
    with pytest.raises(InvalidConfigError):
        render(FAMILY, RAGGED[64], CONFIG, specialized=False, arch="sm_90")


def test_smem_grid_and_block() -> None:
    problem = RAGGED[128]
    q_bytes, stage_bytes = 128 * 128 * 2, 2 * 64 * 128 * 2
    assert space.smem_bytes(problem, CONFIG) == 1024 + q_bytes + 2 * stage_bytes + 7 * 8
    geometry = FAMILY.launch_geometry(problem, CONFIG)
    assert geometry.grid == (2, 2, 1)
    assert geometry.block == (384, 1, 1)


def test_tensor_maps_are_per_head_3d_boxes_of_64_by_64() -> None:
    from templates.attention_sm90.family import tensor_maps

    map_q, map_k, map_v = tensor_maps(RAGGED[128], 4096, 8192, 16384)
    assert map_q == TensorMap3D(4096, 2, 128, 136, 256, 64, 64, "128B", 2, 136 * 256)
    assert map_k == TensorMap3D(8192, 2, 128, 200, 256, 64, 64, "128B", 2, 200 * 256)
    assert map_v.address == 16384 and map_v.depth == 2
    assert map_q.box_bytes == 64 * 128


def test_default_config_is_fa3s_two_consumer_pingpong_tile_with_three_stages() -> None:
    """Three stages: faster than two on an H100 in 7 of 8 shapes (the device report)."""
    assert FAMILY.default_config(RAGGED[128], ARCH) == tile(128, 128, 3, 1)
    assert FAMILY.default_config(RAGGED[64], ARCH) == tile(128, 128, 3, 1)


# ---------------------------------------------------------------- NVRTC and SASS
def compile_configs(
    problem: AttentionProblem, configs: list[TileConfig], root: Path, specialized: bool = False
) -> list[CompiledKernel]:
    rendered = [render(FAMILY, problem, c, specialized=specialized, arch=ARCH) for c in configs]
    results = compile_many(rendered, arch=ARCH, cache=CompileCache(root=root), executor="thread")
    for result in results:
        if not isinstance(result, CompiledKernel):
            raise result
    return [r for r in results if isinstance(r, CompiledKernel)]


def check_sass(kernel: CompiledKernel, *, pingpong: bool) -> None:
    assert kernel.arch == ARCH
    assert kernel.resources.spill_store_bytes == 0, kernel.cache_key
    assert kernel.resources.spill_load_bytes == 0, kernel.cache_key
    counts = instruction_counts(kernel.cubin)
    for opcode in ("HGMMA", "UTMALDG", "SYNCS"):
        assert counts.get(opcode, 0) > 0, (opcode, kernel.cache_key)
    # __syncthreads is one BAR; the ping-pong turns add bar.sync and bar.arrive.
    assert (counts.get("BAR", 0) > 1) == pingpong, kernel.cache_key


def test_sample_configs_compile_to_hgmma_utmaldg_syncs_without_spills(tmp_path: Path) -> None:
    fp16 = compile_configs(CAUSAL[128], [tile(128, 128, 2, 1)], tmp_path)
    bf16 = compile_configs(
        dataclasses.replace(RAGGED[64], dtype="bf16"), [tile(192, 64, 3, 0)], tmp_path, True
    )
    check_sass(fp16[0], pingpong=True)
    check_sass(bf16[0], pingpong=False)


# One NVRTC compile per test (about 10 s on two busy cores): the per-test timeout holds.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("head_dim", "config"),
    [(d, c) for d in space.HEAD_DIMS for c in valid_configs(CAUSAL[d])],
    ids=lambda x: (
        str(x)
        if isinstance(x, int)
        else f"{x.block_m}x{x.block_n}-s{x.num_stages}-pp{int(space.pingpong(x))}"
    ),
)
def test_every_valid_config_compiles_without_spills(
    head_dim: int, config: TileConfig, tmp_path: Path
) -> None:
    (kernel,) = compile_configs(CAUSAL[head_dim], [config], tmp_path)
    check_sass(kernel, pingpong=space.pingpong(config))


# ---------------------------------------------------------------- emulator against float64
def run(rendered: RenderedKernel, problem: AttentionProblem, seed: int) -> dict[str, np.ndarray]:
    inputs = verify.random_inputs(problem, seed=seed)
    b, h, sq, d = problem.batch, problem.heads, problem.seq_q, problem.head_dim
    outputs = {"o": ((b, h, sq, d), inputs["q"].dtype), "lse": ((b, h, sq), np.dtype(np.float32))}
    result = emulator.run_rendered(rendered, inputs=inputs, outputs=outputs)
    return {**result.outputs, **inputs}


# fp32 accumulation and softmax, P rounded to 16 bits before P V, O rounded once: normwise
# bounds with room (fp16: 2^-11 per rounding, bf16: 2^-8); LSE is fp32 throughout.
TOLERANCE = {"fp16": 2e-3, "bf16": 1.6e-2}
LSE_TOLERANCE = 1e-4


def errors(problem: AttentionProblem, got: dict[str, np.ndarray]) -> tuple[float, float]:
    """(normwise relative error of O, max abs error of the finite LSEs) against float64."""
    want_o, want_lse = attention_reference(
        got["q"], got["k"], got["v"], causal=problem.causal, accum_dtype=np.float64
    )
    o = got["o"].astype(np.float64)
    o_error = float(np.linalg.norm(o - want_o) / np.linalg.norm(want_o))
    lse = got["lse"].astype(np.float64)
    empty = np.isneginf(want_lse)
    assert (np.isneginf(lse) == empty).all(), "rows that see no key have LSE -inf, only those"
    assert (o[empty] == 0).all(), "rows that see no key have O = 0"
    lse_error = float(np.abs(lse[~empty] - want_lse[~empty]).max())
    return o_error, lse_error


def check(
    problem: AttentionProblem, config: TileConfig, seed: int, specialized: bool = False
) -> None:
    rendered = render(FAMILY, problem, config, specialized=specialized, arch=ARCH)
    got = run(rendered, problem, seed)
    assert not np.isnan(got["o"].astype(np.float32)).any()
    o_error, lse_error = errors(problem, got)
    assert o_error < TOLERANCE[problem.dtype], o_error
    assert lse_error < LSE_TOLERANCE, lse_error


# A fixed sample runs in the default suite (about 3 s each: a host build and two schedules),
# covering one, two and three consumer warpgroups, ping-pong, 2-4 stages and every block_n;
# the rest are `slow`. Indices into valid_configs(RAGGED[head_dim]), by (head_dim, causal).
SWEEP_SAMPLE = {(64, False): {8}, (64, True): {22, 32}, (128, False): {19}, (128, True): {13}}


def sweep_id(head_dim: int, causal: bool, c: TileConfig) -> str:
    shape = "causal" if causal else "ragged"
    ping = int(space.pingpong(c))
    return f"d{head_dim}-{shape}-{c.block_m}x{c.block_n}-s{c.num_stages}-pp{ping}"


SWEEP = [
    pytest.param(
        d,
        causal,
        c,
        marks=() if i in SWEEP_SAMPLE[d, causal] else (pytest.mark.slow,),
        id=sweep_id(d, causal, c),
    )
    for d in space.HEAD_DIMS
    for causal in (False, True)
    for i, c in enumerate(valid_configs(RAGGED[d]))
]


@pytest.mark.parametrize(("head_dim", "causal", "config"), SWEEP)
def test_every_valid_config_matches_float64(
    head_dim: int, causal: bool, config: TileConfig
) -> None:
    problem = CAUSAL[head_dim] if causal else RAGGED[head_dim]
    check(problem, config, seed=head_dim + int(causal))


@pytest.mark.parametrize("specialized", [False, True])
def test_bf16_matches_float64(specialized: bool) -> None:
    problem = dataclasses.replace(CAUSAL[128], dtype="bf16")
    check(problem, CONFIG, seed=3, specialized=specialized)


def test_pingpong_on_and_off_agree_bit_for_bit() -> None:
    problem = CAUSAL[64]
    outputs = [
        run(
            render(FAMILY, problem, tile(128, 64, 2, ping), specialized=False, arch=ARCH),
            problem,
            9,
        )
        for ping in (0, 1)
    ]
    assert np.array_equal(outputs[0]["o"].view(np.uint16), outputs[1]["o"].view(np.uint16))
    assert np.array_equal(outputs[0]["lse"], outputs[1]["lse"], equal_nan=True)


# ---------------------------------------------------------------- planted defects
Mutation = Callable[[str], str]
# Five key tiles of 64 through two stages: every stage is refilled and both phases are used.
DEFECT_PROBLEM = AttentionProblem(1, 1, 100, 300, 64)


def replace_once(old: str, new: str) -> Mutation:
    def mutate(source: str) -> str:
        assert source.count(old) == 1, f"anchor {old!r} not unique in the template; update test"
        return source.replace(old, new)

    return mutate


def outcome(mutate: Mutation | None) -> str:
    rendered = render(FAMILY, DEFECT_PROBLEM, CONFIG, specialized=False, arch=ARCH)
    if mutate is not None:
        rendered = dataclasses.replace(rendered, source=mutate(rendered.source))
    try:
        got = run(rendered, DEFECT_PROBLEM, seed=5)
    except EmulatorError as exc:
        return f"emulator: {exc}"
    if np.isnan(got["o"].astype(np.float32)).any():
        return "verifier: NaN in O"
    o_error, _ = errors(DEFECT_PROBLEM, got)
    return "pass" if o_error < TOLERANCE["fp16"] else f"verifier: relative error {o_error:.3g}"


def test_the_unmodified_kernel_passes() -> None:
    assert outcome(None) == "pass"


LOOP_QK = "        tessera::wgmma_fence();\n        issue_qk(st.index);"
DEFECTS: dict[str, tuple[Mutation, str]] = {
    "wrong-swizzle-mode": (
        replace_once(
            "const uint64_t desc_k =\n            tessera::wgmma_descriptor(k_stage + box * "
            "KV_BOX_BYTES + col_bytes, 16,\n                                      "
            "SWIZZLE_ATOM_BYTES, tessera::SWIZZLE_128B);",
            "const uint64_t desc_k =\n            tessera::wgmma_descriptor(k_stage + box * "
            "KV_BOX_BYTES + col_bytes, 16,\n                                      "
            "SWIZZLE_ATOM_BYTES, tessera::SWIZZLE_64B);",
        ),
        "verifier: relative error|emulator: .*operand B reads shared offset",
    ),
    "missing-wgmma-fence": (
        replace_once(LOOP_QK, "        issue_qk(st.index);"),
        "emulator: .*without a wgmma.fence",
    ),
    "missing-expect-tx": (
        replace_once(
            "tessera::mbarrier_arrive_expect_tx(&k_full[st.index], KV_TILE_BYTES);",
            "tessera::mbarrier_arrive(&k_full[st.index]);",
        ),
        "emulator: .*missing mbarrier_arrive_expect_tx|verifier: NaN",
    ),
    "wrong-parity-wait": (
        replace_once(
            "tessera::mbarrier_wait_parity(&k_full[st.index], st.phase);",
            "tessera::mbarrier_wait_parity(&k_full[st.index], st.phase ^ 1);",
        ),
        "verifier: NaN|verifier: relative error|emulator: ",
    ),
    "consumer-reads-before-its-barrier": (
        replace_once(
            "        tessera::mbarrier_wait_parity(&v_full[prev.index], prev.phase);\n", ""
        ),
        "verifier: NaN|emulator: ",
    ),
    "producer-overwrites-a-stage-still-read": (
        replace_once(
            "        softmax(j, alpha);\n        tessera::wgmma_wait_group<0>();  // P_{j-1} and O "
            "are free, V_{j-1} is read\n        tessera::wgmma_fence_operand(o_acc);\n"
            "        release(prev.index);",
            "        release(prev.index);\n        softmax(j, alpha);\n        "
            "tessera::wgmma_wait_group<0>();",
        ),
        "emulator: .*overwrites shared bytes .* that the wgmma issued at line \\d+ still reads",
    ),
    "softmax-reads-s-before-its-wait-group": (
        replace_once(
            "        tessera::wgmma_wait_group<1>();  // S_j is ready; O += P_{j-1} V_{j-1} still "
            "runs\n        tessera::wgmma_fence_operand(s_acc);\n        softmax(j, alpha);",
            "        softmax(j, alpha);\n        tessera::wgmma_wait_group<1>();",
        ),
        "verifier: relative error|verifier: NaN",
    ),
    "ragged-keys-not-masked": (
        replace_once("if (col >= seq_kv || (CAUSAL", "if ((CAUSAL"),
        "verifier: relative error",
    ),
    "pingpong-turn-never-handed-over": (
        replace_once(
            "tessera::named_barrier_arrive(next_turn, 2 * WARPGROUP);", "(void)next_turn;"
        ),
        "emulator: .*deadlock.*named barrier",
    ),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_planted_defect_is_caught(defect: str) -> None:
    mutate, expected = DEFECTS[defect]
    result = outcome(mutate)
    assert result != "pass", f"planted defect {defect} went unnoticed"
    assert re.search(expected, result), result
