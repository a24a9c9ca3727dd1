"""The attention_fwd space: rules reject bad tiles with reasons, exact smem, defaults, params."""

from __future__ import annotations

import ctypes

import pytest

from templates.attention import space
from templates.attention.family import FAMILY, default_scale
from tessera_core.hardware import ARCHS
from tessera_core.types import AttentionProblem, TileConfig

D64 = AttentionProblem(2, 3, 1000, 1000, 64, causal=True)
D128 = AttentionProblem(2, 3, 1000, 1000, 128)
Q_REGS = (("q_in_regs", 1),)
Q_SMEM = (("q_in_regs", 0),)


def _violation(problem: AttentionProblem, config: TileConfig, arch: str, rule: str) -> str:
    reasons = [r for r in FAMILY.space.violations(config, problem, arch) if r.startswith(rule)]
    assert reasons, (
        f"{rule} should reject {config}: {FAMILY.space.violations(config, problem, arch)}"
    )
    return reasons[0]


def test_block_k_is_the_single_mma_depth() -> None:
    # Q*K^T is one fully unrolled loop of 16-deep k-steps: another block_k would render the same
    # kernel, so the space offers one value and names why.
    assert FAMILY.space.choices("block_k") == (16,)
    reason = _violation(
        D64, TileConfig(64, 64, 32, 4, 2, Q_REGS), "sm_90", "block_k_is_the_mma_depth"
    )
    assert "block_k=32" in reason


def test_q_in_regs_is_an_option_of_the_space() -> None:
    assert FAMILY.space.option_names == ("q_in_regs",)
    assert FAMILY.space.choices("q_in_regs") == (0, 1)
    reasons = FAMILY.space.violations(TileConfig(64, 64, 16, 4, 2), D64, "sm_90")
    assert any(r.startswith("q_in_regs is not set") for r in reasons), reasons


def test_warps_must_own_whole_row_tiles() -> None:
    reason = _violation(D64, TileConfig(32, 64, 16, 4, 2, Q_REGS), "sm_90", "warps_tile_block_m")
    assert "block_m=32" in reason and "num_warps=4" in reason


def test_shared_memory_is_checked_against_the_arch_opt_in_limit() -> None:
    config = TileConfig(128, 128, 16, 8, 3, Q_REGS)
    assert FAMILY.space.is_valid(config, D64, "sm_90")
    reason = _violation(D64, config, "sm_86", "shared_memory")
    assert f"smem_bytes={space.smem_bytes(D64, config)}" in reason and "sm_86" in reason


def test_fragments_that_would_spill_are_rejected() -> None:
    # Q of 32 rows x 128 in registers next to O: the carried registers alone exceed sm_90's.
    reason = _violation(D128, TileConfig(128, 128, 16, 4, 1, Q_REGS), "sm_90", "registers")
    assert "block_m=128" in reason and "num_warps=4" in reason and "q_in_regs=1" in reason


def test_q_in_shared_memory_frees_the_registers_of_flashattention2_tiles() -> None:
    # FA2's own forward tiles: 4 warps of 32 rows (flash_fwd_launch_template.h).
    fa2_d64 = TileConfig(128, 128, 16, 4, 2, Q_SMEM)
    fa2_d128 = TileConfig(128, 64, 16, 4, 2, Q_SMEM)
    three_stages = TileConfig(128, 64, 16, 4, 3, Q_SMEM)
    for arch in ("sm_80", "sm_90"):
        assert FAMILY.space.violations(fa2_d64, D64, arch) == []
        assert not FAMILY.space.is_valid(TileConfig(128, 128, 16, 4, 2, Q_REGS), D64, arch)
        # ptxas spills 76-132 bytes there (O of 32 rows x 128 carried across the loop) unless
        # three stages move the refill after the softmax.
        reason = _violation(D128, fa2_d128, arch, "registers")
        assert "live across the main loop" in reason and arch in reason
        assert FAMILY.space.violations(three_stages, D128, arch) == []


def test_one_stage_holds_fewer_carried_registers() -> None:
    # One stage loads and waits for the next tile inside the loop, next to O: sm_80's ptxas
    # spills 124 bytes at head_dim 128 with 32-row warps.
    three_stages = TileConfig(128, 64, 16, 4, 3, Q_SMEM)
    one_stage = TileConfig(128, 64, 16, 4, 1, Q_SMEM)
    assert FAMILY.space.is_valid(three_stages, D128, "sm_80")
    reason = _violation(D128, one_stage, "sm_80", "registers")
    assert f"> {space.ONE_STAGE_CARRIED_REGISTER_BUDGET} on sm_80" in reason
    assert space.carried_register_budget("sm_90", three_stages) > space.carried_register_budget(
        "sm_90", TileConfig(128, 64, 16, 4, 2, Q_SMEM)
    )


def test_two_stages_on_sm_80_take_less_with_32_row_warps() -> None:
    # ptxas (NVRTC 13.0 and 13.5): head_dim 128, 128x64, 4 warps, two stages carries 136 and
    # spills 32-40 bytes on sm_80; head_dim 256 with 16-row warps carries 132 and does not.
    tall = TileConfig(128, 64, 16, 4, 2, Q_SMEM)
    short = TileConfig(64, 32, 16, 4, 2, Q_SMEM)
    assert space.carried_register_budget("sm_80", tall) == 128
    assert space.carried_register_budget("sm_80", short) == 136
    assert "> 128 on sm_80" in _violation(D128, tall, "sm_80", "registers")
    d256 = AttentionProblem(2, 4, 512, 512, 256)
    assert FAMILY.space.is_valid(short, d256, "sm_86")


def test_three_stages_leave_less_room_at_the_peak() -> None:
    # The late refill's addresses sit next to all of S: 256 registers spill there, 240 do not.
    d80 = AttentionProblem(1, 1, 256, 256, 80)
    assert FAMILY.space.is_valid(TileConfig(128, 128, 16, 4, 2, Q_SMEM), d80, "sm_90")
    reason = _violation(d80, TileConfig(128, 128, 16, 4, 3, Q_SMEM), "sm_90", "registers")
    assert f"> {space.LATE_REFILL_FRAGMENT_REGISTER_BUDGET}" in reason
    assert FAMILY.space.is_valid(TileConfig(128, 128, 16, 4, 3, Q_SMEM), D64, "sm_90")


def test_registers_model_counts_q_only_while_it_is_held() -> None:
    held = TileConfig(128, 64, 16, 4, 2, Q_REGS)
    staged = TileConfig(128, 64, 16, 4, 2, Q_SMEM)
    m_tiles = 2
    q_regs = m_tiles * (64 // 16) * 4  # whole head_dim of A fragments
    q_step_regs = m_tiles * 4  # one k-step of A fragments
    assert space.carried_registers(D64, held) - space.carried_registers(D64, staged) == q_regs
    assert space.fragment_registers(D64, held) - space.fragment_registers(D64, staged) == (
        q_regs - q_step_regs
    )


def test_head_dim_must_be_a_multiple_of_8_up_to_256() -> None:
    for head_dim in (36, 260, 264):
        problem = AttentionProblem(1, 1, 64, 64, head_dim)
        reason = _violation(problem, TileConfig(64, 64, 16, 4, 2, Q_REGS), "sm_90", "head_dim")
        assert f"head_dim={head_dim}" in reason


@pytest.mark.parametrize("head_dim", range(8, 257, 8))
def test_every_multiple_of_8_up_to_256_has_valid_configurations(head_dim: int) -> None:
    # Rows of 6, 10, 12 or 14 chunks (head_dim 48, 80, 96, 112) do not divide the block's
    # threads: the copy loops idle the last threads of each pass instead of refusing them.
    problem = AttentionProblem(1, 1, 64, 64, head_dim)
    assert FAMILY.space.valid_configs(problem, "sm_90")
    if head_dim <= 128:  # wider rows carry O in 16-row warps only
        assert FAMILY.space.is_valid(TileConfig(32, 64, 16, 2, 2, Q_SMEM), problem, "sm_90")


def test_smem_bytes_counts_q_and_every_kv_stage_with_row_padding() -> None:
    config = TileConfig(128, 64, 16, 4, 2, Q_REGS)
    row_bytes = (64 + space.ROW_PAD_ELEMS) * 2
    assert space.smem_bytes(D64, config) == (128 + 2 * 2 * 64) * row_bytes == 55296


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("head_dim", range(8, 257, 8))
def test_default_config_is_valid_everywhere(arch: str, head_dim: int) -> None:
    for causal in (False, True):
        problem = AttentionProblem(4, 8, 512, 512, head_dim, causal=causal)
        config = FAMILY.default_config(problem, arch)
        assert FAMILY.space.violations(config, problem, arch) == []


def test_default_config_of_head_dim_64_uses_two_row_tiles_per_warp() -> None:
    config = FAMILY.default_config(D64, "sm_90")
    assert space.m_tiles_per_warp(config) == 2


def test_launch_geometry_covers_queries_heads_and_batch() -> None:
    problem = AttentionProblem(3, 5, 300, 200, 64)
    config = TileConfig(128, 64, 16, 4, 2, Q_SMEM)
    geometry = FAMILY.launch_geometry(problem, config)
    assert geometry.grid == (3, 5, 3)
    assert geometry.block == (128, 1, 1)
    assert geometry.smem_bytes == space.smem_bytes(problem, config)


def test_params_carry_pointers_sizes_and_default_scale() -> None:
    pointers = {"q": 0x1000, "k": 0x2000, "v": 0x3000, "o": 0x4000, "lse": 0x5000}
    params = FAMILY.make_params(AttentionProblem(1, 1, 77, 99, 64), pointers=pointers)
    assert [params.q, params.k, params.v, params.o, params.lse] == list(pointers.values())
    assert (params.seq_q, params.seq_kv) == (77, 99)
    assert params.softmax_scale == pytest.approx(default_scale(64)) == pytest.approx(0.125)
    scaled = FAMILY.make_params(D64, pointers=pointers, scale=0.5)
    assert scaled.softmax_scale == 0.5


@pytest.mark.parametrize(("name", "address"), [("q", 0x1008), ("v", 0x3002), ("lse", 0x5002)])
def test_params_refuse_misaligned_tensors(name: str, address: int) -> None:
    pointers = {"q": 0x1000, "k": 0x2000, "v": 0x3000, "o": 0x4000, "lse": 0x5000, name: address}
    with pytest.raises(ValueError, match=f"misaligned tensors {name}=0x{address:x}"):
        FAMILY.make_params(D64, pointers=pointers)


def test_params_layout_matches_the_c_struct() -> None:
    # Five 8-byte pointers, two ints, one float, then the variants' values (three ints, a float,
    # the ALiBi slopes' pointer and batch stride, the varlen prefix sums): the C struct rendered
    # from the same fields.
    layout = [
        (name, getattr(FAMILY.params_type, name).offset) for name, _ in FAMILY.params_type._fields_
    ]
    assert layout == [
        ("q", 0),
        ("k", 8),
        ("v", 16),
        ("o", 24),
        ("lse", 32),
        ("seq_q", 40),
        ("seq_kv", 44),
        ("softmax_scale", 48),
        ("heads_kv", 52),
        ("window_left", 56),
        ("window_right", 60),
        ("softcap", 64),
        ("alibi_slopes", 72),
        ("alibi_batch_stride", 80),
        ("cu_seqlens_q", 88),
        ("cu_seqlens_k", 96),
    ]
    assert ctypes.sizeof(FAMILY.params_type) == 104


def test_params_reject_missing_pointers_and_bad_scale() -> None:
    with pytest.raises(ValueError, match="lse"):
        FAMILY.make_params(D64, pointers={"q": 1, "k": 2, "v": 3, "o": 4})
    with pytest.raises(ValueError, match="positive"):
        FAMILY.make_params(D64, pointers=dict.fromkeys("qkvo", 1) | {"lse": 1}, scale=0.0)
