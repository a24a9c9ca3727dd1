"""The attention_decode problem, space and cost model: keys name a cache-length bucket, the
default configuration is valid, the split heuristic fills the GPU, and the cost model rewards
splitting a long cache over few (batch, KV head) pairs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from autotune.cost_model import Factors, estimate
from autotune.tile_work import tile_work
from templates.attention_decode import space
from templates.registry import get_family
from tessera_core.types import (
    AttentionDecodeProblem,
    decode_kv_bucket,
    parse_shape,
    problem_from_dict,
)

ARCH = "sm_90"


def test_kernel_key_names_the_bucket_heads_and_page() -> None:
    problem = parse_shape("attention_decode", "8x32x8x1x3000x128x16", dtype="bf16", causal=True)
    assert problem == AttentionDecodeProblem(8, 32, 1, 4096, 128, "bf16", True, heads_kv=8,
                                             page_size=16)  # fmt: skip
    assert problem.kernel_key(ARCH) == (
        "attention_decode.bf16.b8.hq32.hkv8.sq1.kv4096.d128.page16.causal.sm_90"
    )
    contiguous = parse_shape("attention_decode", "2x4x4x3x64x64")
    assert contiguous.kernel_key(ARCH).endswith(".kv64.d64.pagenone.noncausal.sm_90")
    assert problem_from_dict(problem.to_dict()) == problem
    assert (
        parse_shape("attention_decode", problem.shape_str(), dtype="bf16", causal=True) == problem
    )


def test_buckets_are_powers_of_two_from_64() -> None:
    assert [decode_kv_bucket(n) for n in (0, 1, 64, 65, 1000, 4096, 4097)] == [
        64, 64, 64, 128, 1024, 4096, 8192,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"heads_kv": 3}, "multiple of heads_kv=3"),
        ({"page_size": -1}, "page_size=-1"),
        ({"heads_kv": 0}, "heads_kv=0"),
    ],
)
def test_bad_problems_name_the_field(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttentionDecodeProblem(1, 8, 1, 64, 64, **kwargs)  # type: ignore[arg-type]


def test_bad_shapes_name_the_form() -> None:
    with pytest.raises(ValueError, match="BxHQxHKVxSQxKVxD"):
        parse_shape("attention_decode", "8x32x2048x64")


@pytest.mark.parametrize("head_dim", [16, 64, 128, 256])
@pytest.mark.parametrize("page_size", [0, 16, 256])
def test_default_config_is_valid(head_dim: int, page_size: int) -> None:
    problem = AttentionDecodeProblem(4, 32, 1, 8192, head_dim, heads_kv=8, page_size=page_size)
    config = get_family("attention_decode").default_config(problem, ARCH)
    assert space.SPACE.is_valid(config, problem, ARCH), space.SPACE.violations(
        config, problem, ARCH
    )


def test_pages_must_be_whole_mma_steps() -> None:
    problem = AttentionDecodeProblem(1, 4, 1, 64, 64, heads_kv=1, page_size=24)
    assert "page_size=24" in (space.SPACE.unsupported(problem, ARCH) or "")


def test_split_heuristic_fills_the_sms_and_stops_at_one_tile_each() -> None:
    lonely = AttentionDecodeProblem(1, 8, 1, 32768, 128, heads_kv=1)  # 1 block unsplit
    crowded = AttentionDecodeProblem(64, 32, 1, 32768, 128, heads_kv=8)  # 512 blocks
    short = AttentionDecodeProblem(1, 8, 1, 64, 128, heads_kv=1)  # one 64-key tile
    base = space.tile(16, 64, 4, 2)
    assert space.heuristic_splits(lonely, base, ARCH) == max(space.SPLIT_CHOICES)
    assert space.heuristic_splits(crowded, base, ARCH) == 1
    assert space.heuristic_splits(short, base, ARCH) == 1


@dataclass(frozen=True)
class FakeResources:
    registers: int = 128
    static_smem_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0


def test_cost_model_rewards_splits_when_few_blocks_share_a_long_cache() -> None:
    problem = AttentionDecodeProblem(1, 8, 1, 32768, 128, heads_kv=1, page_size=64)

    def model_ms(splits: int) -> float:
        config = space.tile(16, 64, 4, 2, splits)
        smem = space.smem_bytes(problem, config)
        return estimate(
            problem, config, FakeResources(), dynamic_smem_bytes=smem, arch=ARCH, factors=Factors()
        ).time_ms

    assert model_ms(32) < model_ms(4) < model_ms(1)
    work = tile_work(problem, space.tile(16, 64, 4, 2, 8))
    assert work.blocks == 8 and work.max_block_iterations == 32768 // 64 // 8
