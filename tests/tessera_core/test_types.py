from __future__ import annotations

import json

import pytest

from tessera_core.types import (
    AttentionBackwardProblem,
    AttentionProblem,
    GemmProblem,
    TileConfig,
    parse_shape,
    problem_from_dict,
)


def test_tile_config_key_is_sorted_json_and_round_trips() -> None:
    config = TileConfig(block_m=128, block_n=64, block_k=32, num_warps=4, num_stages=2)
    key = config.key()
    assert json.loads(key) == config.to_dict()
    assert list(json.loads(key)) == sorted(config.to_dict())
    assert TileConfig.from_dict(json.loads(key)) == config


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("block_m", 0, "block_m=0"),
        ("num_warps", 3, "power of two"),
        ("num_warps", 64, "1024 threads"),
        ("num_stages", -1, "num_stages=-1"),
        ("block_k", 1.5, "block_k=1.5"),
    ],
)
def test_tile_config_rejects_bad_fields_naming_them(field: str, value: object, needle: str) -> None:
    kwargs = {"block_m": 64, "block_n": 64, "block_k": 32, "num_warps": 4, "num_stages": 2}
    kwargs[field] = value  # type: ignore[assignment]
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        TileConfig(**kwargs)


def test_from_dict_names_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"missing num_stages"):
        TileConfig.from_dict(
            {"block_m": 64, "block_n": 64, "block_k": 32, "num_warps": 4, "bogus": 1}
        )


def test_family_options_are_sorted_keyed_and_round_trip() -> None:
    tiles = {"block_m": 64, "block_n": 64, "block_k": 32, "num_warps": 4, "num_stages": 2}
    config = TileConfig.from_dict({**tiles, "z_opt": 2, "a_opt": 1})
    assert config.options == (("a_opt", 1), ("z_opt", 2))
    assert config.option("a_opt") == 1
    assert config.option("missing", 7) == 7
    with pytest.raises(KeyError, match="missing"):
        config.option("missing")
    assert TileConfig.from_dict(json.loads(config.key())) == config
    assert config.key() != TileConfig.from_dict(tiles).key()
    assert str(config).endswith("-a_opt1-z_opt2")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ((("block_m", 1),), "not a valid option name"),
        ((("x", -1),), "x=-1"),
        ((("x", True),), "x=True"),
        ((("x", 1), ("x", 2)), "appears twice"),
    ],
)
def test_bad_options_are_refused_naming_them(
    options: tuple[tuple[str, int], ...], needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2, options=options)


def test_parse_attention_shapes() -> None:
    p = parse_shape("attention", "8x16x2048x64", dtype="bf16", causal=True)
    assert p == AttentionProblem(8, 16, 2048, 2048, 64, dtype="bf16", causal=True)
    q = parse_shape("attention", "1x2x17x33x128")
    assert isinstance(q, AttentionProblem)
    assert (q.seq_q, q.seq_kv, q.head_dim) == (17, 33, 128)


@pytest.mark.parametrize("shape", ["8x16x2048", "8x16x0x64", "axbxcxd", "", "8x16x2048x64x1x1"])
def test_parse_shape_rejects_malformed_naming_the_form(shape: str) -> None:
    with pytest.raises(ValueError, match="BxHxSxD"):
        parse_shape("attention", shape)


def test_parse_gemm_shape_and_causal_rejected() -> None:
    assert parse_shape("gemm", "67x45x93") == GemmProblem(67, 45, 93)
    with pytest.raises(ValueError, match="MxNxK"):
        parse_shape("gemm", "67x45")
    with pytest.raises(ValueError, match="attention only"):
        parse_shape("gemm", "1x2x3", causal=True)


def test_kernel_key_names_every_specialization() -> None:
    base = AttentionProblem(8, 16, 2048, 2048, 64)
    keys = {
        base.kernel_key("sm_90"),
        base.kernel_key("sm_80"),
        AttentionProblem(8, 16, 2048, 2048, 64, causal=True).kernel_key("sm_90"),
        AttentionProblem(8, 16, 2048, 2048, 64, dtype="bf16").kernel_key("sm_90"),
        AttentionProblem(8, 16, 2048, 2048, 128).kernel_key("sm_90"),
        AttentionProblem(8, 16, 1024, 2048, 64).kernel_key("sm_90"),
        AttentionProblem(4, 16, 2048, 2048, 64).kernel_key("sm_90"),
    }
    assert len(keys) == 7
    assert (
        base.kernel_key("sm_90") == "attention_fwd.fp16.b8.h16.sq2048.skv2048.d64.noncausal.sm_90"
    )
    assert GemmProblem(67, 45, 93).kernel_key("sm_80") == "gemm.fp16.m67.n45.k93.sm_80"


def test_problem_dict_round_trip() -> None:
    for problem in (AttentionProblem(1, 2, 3, 4, 64, causal=True), GemmProblem(1, 2, 3, "bf16")):
        assert problem_from_dict(json.loads(json.dumps(problem.to_dict()))) == problem


def test_flop_counting_matches_reference_figures() -> None:
    p = AttentionProblem(8, 16, 2048, 2048, 64)
    assert p.flops() == pytest.approx(137.4e9, rel=1e-3)
    assert AttentionProblem(8, 16, 2048, 2048, 64, causal=True).flops() == p.flops() / 2


def test_attention_backward_problem_has_its_own_keys_and_the_fa2_flop_count() -> None:
    forward = AttentionProblem(2, 4, 100, 130, 64, dtype="bf16", causal=True)
    backward = AttentionBackwardProblem(2, 4, 100, 130, 64, dtype="bf16", causal=True)
    assert backward != forward and backward.op == "attention_bwd"
    assert backward.kernel_key("sm_80") == (
        "attention_bwd.bf16.b2.h4.sq100.skv130.d64.causal.sm_80"
    )
    assert backward.generic_key("sm_80") == "attention_bwd.bf16.d64.causal.sm_80.generic"
    assert backward.flops() == 2.5 * forward.flops()
    assert backward.io_bytes() > forward.io_bytes()
    assert problem_from_dict(json.loads(json.dumps(backward.to_dict()))) == backward
