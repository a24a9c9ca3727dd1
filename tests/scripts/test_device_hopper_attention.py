"""The device check's attention_sm90 sweep: which configurations it times, and its table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def sweep_module():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import device_hopper_attention

        yield device_hopper_attention
    finally:
        sys.path.remove(str(SCRIPTS))


def test_the_default_comes_first_and_only_fitting_alternatives_follow(sweep_module) -> None:
    from templates.registry import family_for

    for problem in sweep_module.SHAPES:
        configs = sweep_module.configs(problem)
        family = family_for(problem, sweep_module.ARCH)
        assert family.name == "attention_sm90"
        assert configs[0] == family.default_config(problem, sweep_module.ARCH)
        assert len(set(configs)) == len(configs)
        widths = {c.block_n for c in configs}
        # 192-key tiles fit d64's stages in shared memory, not d128's.
        assert (192 in widths) == (problem.head_dim == 64), problem


def test_the_table_has_a_column_per_configuration_and_the_best_against_cudnn(sweep_module):
    rows = [
        {
            "problem": "8x16x2048x2048x64",
            "causal": False,
            "sdpa_flash": 290.0,
            "sdpa_cudnn": 400.0,
            "ours": {"a": 380.0, "b": 420.0},
        },
        {
            "problem": "8x16x2048x2048x128",
            "causal": True,
            "sdpa_flash": "RuntimeError",
            "sdpa_cudnn": 500.0,
            "ours": {"a": "wrong: rel err 1.00e-01", "c": 450.0},
        },
    ]
    lines = sweep_module.report_lines(rows)
    assert lines[3] == "| shape | causal | a | b | c | SDPA flash | SDPA cuDNN | best / cuDNN |"
    assert lines[5] == "| 8x16x2048x2048x64 | False | 380.0 | 420.0 | - | 290.0 | 400.0 | 1.05 |"
    assert lines[6] == (
        "| 8x16x2048x2048x128 | True | wrong: rel err 1.00e-01 | - | 450.0 | RuntimeError "
        "| 500.0 | 0.90 |"
    )
    assert sweep_module.report_lines([]) == []
