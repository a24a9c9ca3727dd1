"""The attention_bwd family: registry entry, space rules and their messages, exact shared memory,
launch grid of both dQ modes, defaults, Params construction."""

from __future__ import annotations

import numpy as np
import pytest

from generator import emulate_backward
from templates.attention_bwd import space
from templates.attention_bwd.family import POINTER_NAMES
from templates.registry import ALL_FAMILY_NAMES, FAMILY_NAMES, get_family
from tessera_core.types import AttentionBackwardProblem, AttentionProblem

FAMILY = get_family("attention_bwd")
PROBLEM = AttentionBackwardProblem(1, 2, 65, 97, 64, causal=True)


def test_the_registry_serves_the_backward_family() -> None:
    assert "attention_bwd" in ALL_FAMILY_NAMES
    assert "attention_bwd" in FAMILY_NAMES  # tuned and proposed for tuning like the forward
    assert FAMILY.name == FAMILY.op == PROBLEM.family == "attention_bwd"
    assert PROBLEM.kernel_key("sm_90") == "attention_bwd.fp16.b1.h2.sq65.skv97.d64.causal.sm_90"
    assert get_family("attention").name == "attention_fwd"  # the forward is untouched


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("head_dim", [16, 32, 48, 64, 80, 96, 112, 128])
def test_the_default_is_valid_and_uses_atomic_dq(head_dim: int, arch: str) -> None:
    problem = AttentionBackwardProblem(2, 3, 129, 257, head_dim, dtype="bf16", causal=True)
    config = FAMILY.default_config(problem, arch)
    assert space.SPACE.is_valid(config, problem, arch)
    assert not space.deterministic(config)


def test_rules_name_the_values_they_reject() -> None:
    reasons = space.SPACE.violations(space.tile(32, 64, 4, 2), PROBLEM, "sm_90")
    assert any("block_m=32" in r and "num_warps=4 = 64" in r for r in reasons), reasons
    reasons = space.SPACE.violations(space.tile(128, 128, 2, 2), PROBLEM, "sm_90")
    assert any(r.startswith("registers:") and "would spill" in r for r in reasons), reasons
    odd = AttentionBackwardProblem(1, 1, 32, 32, 76)
    reasons = space.SPACE.violations(space.tile(32, 32, 2, 1), odd, "sm_90")
    assert any("head_dim=76 must be a multiple of 8" in r for r in reasons), reasons
    varlen = AttentionBackwardProblem(2, 1, 32, 32, 64, layout="bshd", varlen=True)
    reasons = space.SPACE.violations(space.tile(32, 32, 2, 1), varlen, "sm_90")
    assert any(r.startswith("not_varlen:") for r in reasons), reasons


def test_the_forward_problem_is_refused() -> None:
    with pytest.raises(TypeError, match="AttentionBackwardProblem"):
        space.as_problem(AttentionProblem(1, 1, 32, 32, 64))


def test_shared_memory_is_exact_for_both_modes() -> None:
    row_bytes = (64 + 8) * 2
    kv_tiles = (2 * 32 + 2 * 2 * 64) * row_bytes  # K, V; two stages of (Q, dO)
    ds = 64 * (32 + 8) * 2
    floats = 2 * 64 * 4  # LSE and D of one query tile
    assert FAMILY.smem_bytes(PROBLEM, space.tile(64, 32, 2, 2, 0)) == kv_tiles + ds + floats
    q_tiles = (2 * 64 + 2 * 2 * 32) * row_bytes  # Q, dO; two stages of (K, V)
    assert (
        FAMILY.smem_bytes(PROBLEM, space.tile(64, 32, 2, 2, 1)) == max(kv_tiles, q_tiles) + floats
    )


def test_the_deterministic_grid_adds_one_block_per_query_tile() -> None:
    atomic = FAMILY.launch_geometry(PROBLEM, space.tile(64, 32, 2, 2, 0))
    det = FAMILY.launch_geometry(PROBLEM, space.tile(64, 32, 2, 2, 1))
    assert atomic.grid == (4, 2, 1)  # ceil(97 / 32) KV blocks, heads, batch
    assert det.grid == (4 + 2, 2, 1)  # plus ceil(65 / 64) query blocks
    assert atomic.block == det.block == (64, 1, 1)


def test_params_name_missing_and_misaligned_tensors() -> None:
    pointers = {name: 4096 * (i + 1) for i, name in enumerate(POINTER_NAMES)}
    params = FAMILY.make_params(PROBLEM, pointers=pointers)
    assert params.seq_q == 65 and params.seq_kv == 97
    assert params.softmax_scale == pytest.approx(0.125)
    with pytest.raises(ValueError, match=r"missing pointers \['dq'\]"):
        FAMILY.make_params(PROBLEM, pointers={n: p for n, p in pointers.items() if n != "dq"})
    with pytest.raises(ValueError, match=r"dout=0x[0-9a-f]+ \(needs 16-byte alignment\)"):
        FAMILY.make_params(PROBLEM, pointers={**pointers, "dout": pointers["dout"] + 2})
    with pytest.raises(ValueError, match="must be positive"):
        FAMILY.make_params(PROBLEM, pointers=pointers, scale=0.0)


def test_the_emulator_names_missing_tensors() -> None:
    q = np.zeros((1, 2, 65, 64), np.float16)
    with pytest.raises(ValueError, match=r"missing \['lse', 'do'\]"):
        emulate_backward.run_attention_backward_problem(PROBLEM, {"q": q, "k": q, "v": q, "o": q})


def test_the_wide_deterministic_tile_is_admitted_above_the_estimate_by_name_only() -> None:
    wide = AttentionBackwardProblem(1, 1, 256, 256, 128)
    admitted, twin = space.tile(64, 64, 4, 1, 1), space.tile(64, 64, 4, 2, 1)
    assert space.fragment_registers(wide, admitted) > space.FRAGMENT_REGISTER_BUDGET
    assert not space.SPACE.violations(admitted, wide, "sm_90")
    # Its neighbours that spill stay out: two stages, and the atomic kernel.
    assert any(r.startswith("registers:") for r in space.SPACE.violations(twin, wide, "sm_90"))
    atomic = space.tile(64, 64, 4, 1, 0)
    assert any(r.startswith("registers:") for r in space.SPACE.violations(atomic, wide, "sm_90"))
