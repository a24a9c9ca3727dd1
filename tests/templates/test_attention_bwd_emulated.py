"""The attention_bwd kernel on the host emulator: every valid configuration of a ragged causal
and a non-causal shape against float64 gradients (each run under two schedules that must agree
bit for bit; outputs start as NaN, dQ at zero where the kernel adds into it atomically)."""

from __future__ import annotations

import pytest

from generator.grad_check import GRAD_TOL_ULPS, emulated_errors
from templates.attention_bwd import space
from tessera_core.types import AttentionBackwardProblem, TileConfig

ARCH = "sm_90"
# Ragged in both lengths, seq_kv > seq_q (bottom-right causal offset), two heads, fp16.
CAUSAL = AttentionBackwardProblem(1, 2, 65, 97, 64, dtype="fp16", causal=True)
# Non-causal, bf16, short queries against ragged keys, a small head_dim.
NONCAUSAL = AttentionBackwardProblem(1, 1, 33, 80, 32, dtype="bf16", causal=False)


def _configs(problem: AttentionBackwardProblem) -> list[TileConfig]:
    return space.SPACE.valid_configs(problem, ARCH)


def _check(problem: AttentionBackwardProblem, config: TileConfig, **kwargs: object) -> None:
    errors = emulated_errors(problem, config, arch=ARCH, **kwargs)  # type: ignore[arg-type]
    assert all(err <= GRAD_TOL_ULPS for err in errors.values()), (str(config), errors)


def test_the_sweep_covers_both_dq_modes_and_several_tiles() -> None:
    for problem in (CAUSAL, NONCAUSAL):
        configs = _configs(problem)
        assert {space.deterministic(c) for c in configs} == {False, True}
        assert len({(c.block_m, c.block_n, c.num_warps) for c in configs}) >= 3


@pytest.mark.parametrize("config", _configs(CAUSAL), ids=str)
def test_every_config_ragged_causal(config: TileConfig) -> None:
    _check(CAUSAL, config)


@pytest.mark.parametrize("config", _configs(NONCAUSAL), ids=str)
def test_every_config_noncausal(config: TileConfig) -> None:
    _check(NONCAUSAL, config)


@pytest.mark.parametrize("det", [0, 1])
def test_head_dim_128_with_rows_that_see_no_key(det: int) -> None:
    # seq_q > seq_kv, causal: the first 30 query rows see no key (LSE = -inf, zero dQ).
    problem = AttentionBackwardProblem(1, 1, 70, 40, 128, dtype="bf16", causal=True)
    _check(problem, space.tile(32, 32, 2, 2, det))


def test_specialized_sizes() -> None:
    _check(CAUSAL, space.tile(64, 32, 2, 2, 0), specialized=True)


@pytest.mark.slow
@pytest.mark.parametrize("d", [16, 64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_every_config_larger_grid(d: int, causal: bool) -> None:
    problem = AttentionBackwardProblem(2, 2, 150, 211, d, dtype="fp16", causal=causal)
    for config in _configs(problem):
        _check(problem, config, seed=d)


@pytest.mark.parametrize("head_dim", [96, 128])
def test_the_wide_deterministic_tile_above_head_dim_64(head_dim: int) -> None:
    # 64 x 64 tiles with 4 warps, admitted above the register estimate (SPILL_FREE_ABOVE_BUDGET).
    problem = AttentionBackwardProblem(1, 2, 70, 45, head_dim, dtype="fp16", causal=True)
    config = space.tile(64, 64, 4, 1, 1)
    assert config in space.SPACE.valid_configs(problem, ARCH)
    _check(problem, config)
