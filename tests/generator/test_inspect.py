"""`python -m generator.inspect`: one kernel's resources and SASS histograms, partial configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generator.inspect import complete_config
from templates.registry import get_family
from tessera_core.errors import InvalidConfigError
from tessera_core.types import AttentionProblem, GemmProblem

REPO = Path(__file__).resolve().parents[2]
PROBLEM = AttentionProblem(1, 2, 256, 256, 64)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator.inspect", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_json_report_of_a_completed_partial_config():
    done = run("--shape", "1x2x256x64", "--arch", "sm_90", "--json", "--config",
               '{"block_m": 64, "num_warps": 4}')  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("registers", "smem_bytes", "spill_bytes", "sass_counts", "main_loop_sass_counts"):
        assert key in report
    assert report["completed_from"] == {"block_m": 64, "num_warps": 4}
    assert report["config"]["block_m"] == 64 and report["config"]["num_warps"] == 4
    assert 0 < report["registers"] <= 255 and report["spill_bytes"] == 0
    family = get_family("attention_fwd")
    from tessera_core.types import TileConfig

    config = TileConfig.from_dict(report["config"])
    assert report["smem_bytes"] >= family.smem_bytes(PROBLEM, config)
    whole = sum(n for op, n in report["sass_counts"].items() if op.startswith("HMMA"))
    loop = sum(n for op, n in report["main_loop_sass_counts"].items() if op.startswith("HMMA"))
    assert 0 < loop <= whole
    assert sum(report["main_loop_sass_counts"].values()) < sum(report["sass_counts"].values())


def test_text_report_prints_the_completion_and_both_histograms():
    done = run("--op", "gemm", "--shape", "256x256x256", "--arch", "sm_80", "--config",
               '{"block_m": 64, "block_n": 64}')  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('completed {"block_m": 64, "block_n": 64} -> ')
    for text in ("registers", "shared memory", "spills", "stack", "SASS, main loop", "HMMA"):
        assert text in done.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"block_m": 64, "num_warps": 8}', "block_m=64 must be a multiple"),
        ('{"block_m": 64', "not JSON"),
        ('{"bogus": 1}', "bogus not a tunable"),
        ('{"block_m": "64"}', "JSON object of integers"),
    ],
)
def test_invalid_configs_are_one_line_errors_with_exit_2(config, message):
    done = run("--shape", "1x2x256x64", "--config", config)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_completion_is_the_valid_config_closest_to_the_default():
    family = get_family("gemm")
    problem = GemmProblem(4096, 4096, 4096)
    default = family.default_config(problem, "sm_90")
    config, completed = complete_config(family, problem, "sm_90", {"block_k": default.block_k})
    assert completed and config == default  # the default itself agrees: distance 0
    config, _ = complete_config(family, problem, "sm_90", {"num_warps": 8})
    assert config.num_warps == 8 and family.space.is_valid(config, problem, "sm_90")
    again, _ = complete_config(family, problem, "sm_90", {"num_warps": 8})
    assert again == config
    with pytest.raises(InvalidConfigError, match="is invalid"):
        complete_config(
            family,
            problem,
            "sm_90",
            {"block_m": 128, "block_n": 128, "block_k": 16, "num_warps": 1, "num_stages": 2},
        )


def test_sm90a_gemm_reports_the_hopper_family_and_its_opcodes():
    done = run("--op", "gemm", "--shape", "512x512x512", "--dtype", "bf16", "--arch", "sm_90a",
               "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["family"] == "gemm_sm90" and report["fallback_reason"] is None
    assert report["kernel_name"] == "tessera_gemm_sm90"
    base = report["sass_base_counts"]
    assert base["HGMMA"] > 0 and base["UTMALDG"] > 0 and base["SYNCS"] > 0
    assert "HMMA" not in base
    loop = report["main_loop_sass_counts"]
    assert sum(n for op, n in loop.items() if op.startswith("HGMMA")) > 0  # the consumers' loop
    assert any(op.startswith("SYNCS") for op in loop)  # it waits on the stage's mbarrier


@pytest.mark.slow  # the registry tests cover the fallback; this one costs a compile
def test_an_unaligned_sm90a_gemm_inspects_the_mma_sync_family_and_says_why():
    report = json.loads(
        run("--op", "gemm", "--shape", "128x130x64", "--arch", "sm_90a", "--json").stdout
    )
    assert report["family"] == "gemm" and "tma_alignment" in report["fallback_reason"]
    assert report["sass_base_counts"]["HMMA"] > 0


def test_sm90a_fp8_gemm_reports_qgmma_and_attention_refuses_e4m3():
    done = run("--op", "gemm", "--shape", "512x512x512", "--dtype", "e4m3", "--arch", "sm_90a",
               "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["family"] == "gemm_sm90" and report["config"]["block_k"] == 128
    assert report["sass_base_counts"]["QGMMA"] > 0 and "HGMMA" not in report["sass_base_counts"]
    assert any(op.startswith("QGMMA") for op in report["main_loop_sass_counts"])
    refused = run("--op", "attention", "--shape", "1x2x64x64", "--dtype", "e4m3")  # sm_90
    assert refused.returncode == 2
    assert "dtype=e4m3: the mma.sync attention takes fp16 or bf16" in refused.stderr


def test_sm90a_attention_reports_attention_sm90_and_its_hopper_opcodes():
    done = run("--op", "attention", "--arch", "sm_90a", "--shape", "8x16x2048x128", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["family"] == "attention_sm90" and report["fallback_reason"] is None
    assert report["kernel_name"] == "tessera_attention_sm90"
    assert report["spill_bytes"] == 0
    for opcode in ("HGMMA", "UTMALDG", "SYNCS"):
        assert sum(n for op, n in report["sass_counts"].items() if op.startswith(opcode)) > 0
    assert not any(op.startswith("HMMA") for op in report["sass_counts"])
    assert any(op.startswith("HGMMA") for op in report["main_loop_sass_counts"])
