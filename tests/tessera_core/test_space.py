from __future__ import annotations

import pytest

from tessera_core.space import Constraint, Param, Space
from tessera_core.types import GemmProblem, TileConfig


def _space() -> Space:
    def k_fits(config: TileConfig, problem, arch: str) -> str | None:
        if config.block_k > problem.k:
            return f"block_k={config.block_k} exceeds k={problem.k}"
        return None

    return Space(
        family="toy",
        params=(
            Param("block_m", (32, 64)),
            Param("block_n", (32,)),
            Param("block_k", (16, 32)),
            Param("num_warps", (2, 4)),
            Param("num_stages", (2,)),
        ),
        constraints=(Constraint("k_fits", k_fits),),
    )


def test_space_enumerates_product_and_filters_by_constraints() -> None:
    space = _space()
    assert space.size() == 8
    assert len(list(space.all_configs())) == 8
    valid = space.valid_configs(GemmProblem(64, 64, 16), "sm_90")
    assert len(valid) == 4 and all(c.block_k == 16 for c in valid)


def test_violations_name_rule_field_and_value() -> None:
    space = _space()
    bad = TileConfig(block_m=128, block_n=32, block_k=32, num_warps=4, num_stages=2)
    reasons = space.violations(bad, GemmProblem(64, 64, 16), "sm_90")
    assert any("block_m=128 is not one of [32, 64]" in r for r in reasons)
    assert any(r.startswith("k_fits: block_k=32 exceeds k=16") for r in reasons)


def test_space_must_cover_every_tile_field() -> None:
    with pytest.raises(ValueError, match="must name each of"):
        Space(family="broken", params=(Param("block_m", (16,)),), constraints=())


def test_family_options_are_params_enumerated_and_checked() -> None:
    base = _space()
    space = Space(family="toy", params=(*base.params, Param("swizzle", (0, 1))), constraints=())
    assert space.option_names == ("swizzle",)
    configs = list(space.all_configs())
    assert len(configs) == 16 and {c.option("swizzle") for c in configs} == {0, 1}
    problem = GemmProblem(64, 64, 16)
    plain = TileConfig(block_m=32, block_n=32, block_k=16, num_warps=2, num_stages=2)
    assert space.violations(plain, problem, "sm_90") == [
        "swizzle is not set; expected one of [0, 1]"
    ]
    foreign = TileConfig.from_dict({**plain.to_dict(), "swizzle": 1, "group_m": 8})
    assert space.violations(foreign, problem, "sm_90") == ["group_m is not a tunable of toy"]
    assert base.violations(foreign, problem, "sm_90") == [
        "group_m is not a tunable of toy",
        "swizzle is not a tunable of toy",
    ]


def test_shared_arch_rules_name_need_and_limit() -> None:
    from tessera_core.space import grid_within_arch, smem_within_arch, threads_within_arch

    config = TileConfig(block_m=64, block_n=64, block_k=32, num_warps=32, num_stages=2)
    problem = GemmProblem(64, 64, 64)
    assert threads_within_arch(config, problem, "sm_90") is None  # exactly 1024 threads
    smem_rule = smem_within_arch(lambda p, c: 164 * 1024)
    assert smem_rule(config, problem, "sm_90") is None
    assert "limit of 166912 bytes" in (smem_rule(config, problem, "sm_80") or "")
    grid_rule = grid_within_arch(lambda p, c: (1, 65535, 1))
    assert grid_rule(config, problem, "sm_90") is None
    too_tall = grid_within_arch(lambda p, c: (1, 1, 65536))
    assert "exceeds 65535" in (too_tall(config, problem, "sm_90") or "")


def test_family_spaces_reject_grids_the_hardware_cannot_launch() -> None:
    from templates.registry import get_family
    from tessera_core.types import AttentionProblem

    family = get_family("attention")
    problem = AttentionProblem(batch=1, heads=70000, seq_q=64, seq_kv=64, head_dim=64)
    config = family.default_config(AttentionProblem(1, 1, 64, 64, 64), "sm_90")
    reasons = family.space.violations(config, problem, "sm_90")
    assert any(r.startswith("grid:") for r in reasons), reasons


def test_an_option_with_a_default_may_be_left_out_but_not_set_wrong() -> None:
    base = _space()
    space = Space(
        family="toy", params=(*base.params, Param("swizzle", (0, 1), default=0)), constraints=()
    )
    problem = GemmProblem(64, 64, 16)
    plain = TileConfig(block_m=32, block_n=32, block_k=16, num_warps=2, num_stages=2)
    assert space.violations(plain, problem, "sm_90") == []
    wrong = TileConfig.from_dict({**plain.to_dict(), "swizzle": 2})
    assert space.violations(wrong, problem, "sm_90") == ["swizzle=2 is not one of [0, 1]"]
    assert {c.option("swizzle") for c in space.all_configs()} == {0, 1}  # enumerated all the same
