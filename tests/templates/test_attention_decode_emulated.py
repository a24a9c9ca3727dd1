"""The attention_decode kernel on the host emulator against float64: ragged cache lengths per
batch entry, contiguous and paged caches (pages of 16, 64 and 256 keys), GQA and MQA, appended
keys, causal with several query tokens, windows, softcap and split-KV; a sample of every valid
configuration at one shape by default, all of them in the slow sweep. Every run executes under
two schedules that must agree bit for bit, with outputs and workspaces poisoned with NaN."""

from __future__ import annotations

import numpy as np
import pytest
from decode_runs import DecodeCase, errors, make_tensors, problem_of

from generator.emulate_decode import full_cache_inputs, output_shapes, run_attention_decode_problem
from generator.emulator import run_rendered
from generator.render import render
from generator.verify import compare, reference
from templates.attention_decode import space
from templates.registry import get_family
from tessera_core.types import AttentionDecodeProblem, TileConfig

ARCH = "sm_90"

CASES: list[tuple[DecodeCase, TileConfig | None, int]] = [
    # (case, config (None: the family's default), num_splits override (0: the config's))
    (DecodeCase(heads_q=8, heads_kv=2, head_dim=64, cache_seqlens=(5, 130, 77)), None, 0),
    (
        DecodeCase(
            heads_q=4,
            heads_kv=1,
            head_dim=128,
            cache_seqlens=(33, 200),
            seq_new=1,
            page_size=16,
            dtype="bf16",
        ),
        space.tile(16, 64, 4, 2),
        4,
    ),
    (
        DecodeCase(
            heads_q=4,
            heads_kv=2,
            head_dim=64,
            cache_seqlens=(10, 150),
            seq_q=3,
            seq_new=3,
            page_size=64,
            causal=True,
        ),
        space.tile(16, 32, 2, 1, 2),
        0,
    ),
    (
        DecodeCase(
            heads_q=2,
            heads_kv=2,
            head_dim=32,
            cache_seqlens=(300, 5),
            seq_q=2,
            seq_new=2,
            page_size=256,
            causal=True,
        ),
        space.tile(16, 64, 2, 2, 4),
        0,
    ),
    (
        DecodeCase(
            heads_q=6,
            heads_kv=3,
            head_dim=32,
            cache_seqlens=(90, 41),
            seq_q=2,
            window_size=(24, 0),
            softcap=3.0,
        ),
        space.tile(32, 32, 1, 2, 2),
        0,
    ),
    # seq_q > seqlen_k with causal: the first query rows see no key (O = 0, LSE = -inf).
    (
        DecodeCase(
            heads_q=2,
            heads_kv=1,
            head_dim=16,
            cache_seqlens=(0, 1),
            seq_q=4,
            seq_new=2,
            causal=True,
        ),
        space.tile(16, 32, 2, 2),
        3,
    ),
]


def _check(
    case: DecodeCase,
    config: TileConfig | None,
    num_splits: int = 0,
    *,
    specialized: bool = False,
    seed: int = 0,
) -> None:
    tensors = make_tensors(case, seed)
    result = run_attention_decode_problem(
        problem_of(case, tensors),
        tensors,
        window_size=case.window_size,
        softcap=case.softcap,
        num_splits=num_splits,
        config=config,
        specialized=specialized,
        arch=ARCH,
    )
    assert not errors(case, tensors, result), (
        case.label(),
        str(config),
        errors(case, tensors, result),
    )


@pytest.mark.parametrize(
    "case,config,num_splits", CASES, ids=[f"{c.label()}-{cfg}-s{n}" for c, cfg, n in CASES]
)
def test_matches_float64(case: DecodeCase, config: TileConfig | None, num_splits: int) -> None:
    _check(case, config, num_splits)


# ALiBi (FA2 semantics: -slope * |s + seqlen_k - seq_q - j| with each sequence's own
# seqlen_k): per-head and per-(batch, head) slopes, GQA packing (rows of one block belong to
# different query heads), paged and contiguous caches, appends, split-KV on, combined with
# causal, a window and softcap.
ALIBI_CASES: list[tuple[DecodeCase, TileConfig | None, int]] = [
    (
        DecodeCase(
            heads_q=8,
            heads_kv=2,
            head_dim=64,
            cache_seqlens=(37, 170, 5),
            seq_new=1,
            page_size=16,
            alibi="heads",
        ),
        space.tile(16, 32, 2, 2),
        4,
    ),
    (
        DecodeCase(
            heads_q=4,
            heads_kv=1,
            head_dim=32,
            cache_seqlens=(120, 9),
            seq_q=3,
            seq_new=3,
            causal=True,
            alibi="batch_heads",
            dtype="bf16",
        ),
        space.tile(16, 32, 1, 2),
        3,
    ),
    (
        DecodeCase(
            heads_q=6,
            heads_kv=3,
            head_dim=32,
            cache_seqlens=(90, 41),
            seq_q=2,
            page_size=32,
            window_size=(40, 3),
            softcap=3.0,
            alibi="batch_heads",
        ),
        space.tile(32, 64, 2, 1),
        2,
    ),
]


@pytest.mark.parametrize(
    "case,config,num_splits",
    ALIBI_CASES,
    ids=[f"{c.label()}-{cfg}-s{n}" for c, cfg, n in ALIBI_CASES],
)
def test_alibi_matches_float64(
    case: DecodeCase, config: TileConfig | None, num_splits: int
) -> None:
    _check(case, config, num_splits)


def test_alibi_specialized_sizes() -> None:
    case = DecodeCase(heads_q=4, heads_kv=2, head_dim=32, cache_seqlens=(70, 3), seq_q=2,
                      seq_new=1, page_size=16, causal=True, alibi="heads")  # fmt: skip
    _check(case, space.tile(16, 32, 2, 2, 2), specialized=True)


def test_specialized_sizes() -> None:
    case = DecodeCase(
        heads_q=4,
        heads_kv=2,
        head_dim=64,
        cache_seqlens=(70, 3),
        seq_q=2,
        seq_new=1,
        page_size=16,
        causal=True,
    )
    _check(case, space.tile(16, 64, 4, 2, 2), specialized=True)


# One shape for the sweep over configurations: GQA 4:2 over two tokens (8 packed rows),
# paged by 16, ragged lengths, an append and causal masking.
SWEEP = DecodeCase(
    heads_q=4,
    heads_kv=2,
    head_dim=32,
    cache_seqlens=(61, 140),
    seq_q=2,
    seq_new=1,
    page_size=16,
    causal=True,
)
# The default run takes every 26th valid configuration (five of 120): each tile parameter
# and three split counts appear (split counts do not change the binary; tiles do).
SAMPLE_EVERY = 26


def _sweep_configs() -> list[TileConfig]:
    tensors = make_tensors(SWEEP, 0)
    return space.SPACE.valid_configs(problem_of(SWEEP, tensors), ARCH)


def test_the_sweep_covers_every_tunable() -> None:
    sample = _sweep_configs()[::SAMPLE_EVERY]
    for name in ("block_m", "block_n", "num_warps", "num_stages"):
        assert len({c.to_dict()[name] for c in sample}) >= 2, name
    assert len({space.num_splits(c) for c in sample}) >= 3


@pytest.mark.parametrize("config", _sweep_configs()[::SAMPLE_EVERY], ids=str)
def test_sample_of_every_valid_config(config: TileConfig) -> None:
    _check(SWEEP, config)


@pytest.mark.slow
@pytest.mark.parametrize("config", _sweep_configs(), ids=str)
def test_every_valid_config(config: TileConfig) -> None:
    _check(SWEEP, config, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("head_dim", [16, 48, 96, 256])
@pytest.mark.parametrize("page_size", [0, 16, 64])
def test_head_dims_and_pages(head_dim: int, page_size: int) -> None:
    case = DecodeCase(
        heads_q=4,
        heads_kv=1,
        head_dim=head_dim,
        cache_seqlens=(100, 7, 33),
        seq_new=2,
        page_size=page_size,
        causal=True,
    )
    _check(case, None, 0, seed=head_dim)
    _check(case, None, 3, seed=head_dim + 1)


@pytest.mark.parametrize("page_size,alibi", [(0, "none"), (32, "none"), (32, "batch_heads")])
def test_the_measured_objectives_launch_matches_float64(page_size: int, alibi: str) -> None:
    # What autotune's measured objective launches: full_cache_inputs and output_shapes, with
    # make_params' default run-time values (no params_extra), counters as a zeroed input.
    problem = AttentionDecodeProblem(2, 4, 2, 128, 32, "bf16", True, heads_kv=2,
                                     page_size=page_size, alibi=alibi)  # type: ignore[arg-type]  # fmt: skip
    inputs = full_cache_inputs(problem, np.random.default_rng(page_size))
    config = space.tile(16, 32, 2, 2, 4)
    rendered = render(get_family("attention_decode"), problem, config, arch=ARCH)
    run = run_rendered(rendered, inputs=inputs, outputs=output_shapes(problem))
    passed, rel, _, reason = compare(problem, run.outputs, reference(problem, inputs))
    assert passed, (rel, reason)
