"""`python -m generator.verify`: the CLI, its comparison, and every valid configuration of each
family's space at one small ragged shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator import verify
from templates.registry import get_family
from tessera_core import config as knobs
from tessera_core.cli import run_cli
from tessera_core.types import AttentionProblem, GemmProblem, Problem

ROOT = Path(__file__).resolve().parents[2]
ARCH = "sm_90"


def test_cli_runs_one_configuration_and_prints_one_line() -> None:
    config = {"block_m": 32, "block_n": 32, "block_k": 16, "num_warps": 2, "num_stages": 2,
              "q_in_regs": 1}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "generator.verify", "--op", "attention", "--shape", "1x2x17x64",
         "--causal", "--config", json.dumps(config), "--seed", "3", "--arch", ARCH],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        "PASS attention_fwd fp16 1x2x17x17x64 causal m32n32k16w2s2-q_in_regs1 rel_err="
    )
    assert lines[1] == "1/1 configurations passed"


def test_cli_verifies_the_attention_variants() -> None:
    variants = ["--gqa", "4:2", "--window", "9,2", "--softcap", "20", "--alibi", "batch_heads",
                "--layout", "bshd"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "generator.verify", "--op", "attention", "--shape", "2x4x45x70x40",
         *variants, "--seed", "5", "--arch", ARCH],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.splitlines()[0]
    assert line.startswith(
        "PASS attention_fwd fp16 2x4x45x70x40 --gqa 4:2 --window 9,2 --softcap 20 "
        "--alibi batch_heads --layout bshd "
    ), line


def test_cli_verifies_the_attention_backward_at_a_ragged_causal_shape() -> None:
    config = {"block_m": 32, "block_n": 32, "block_k": 16, "num_warps": 2, "num_stages": 1,
              "deterministic": 1}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "generator.verify", "--op", "attention_bwd", "--shape",
         "1x2x45x29x32", "--causal", "--config", json.dumps(config), "--arch", ARCH],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "PASS attention_bwd fp16 1x2x45x29x32 causal m32n32k16w2s1-deterministic1 rel_err="
    )
    assert lines[1] == "1/1 configurations passed"


def test_cli_verifies_the_attention_backward_with_every_variant_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "generator.verify", "--op", "attention_bwd", "--shape",
         "1x4x77x131x40", "--gqa", "4:2", "--window", "20,7", "--softcap", "2", "--alibi",
         "batch_heads", "--layout", "bshd", "--arch", ARCH],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "PASS attention_bwd fp16 1x4x77x131x40 --gqa 4:2 --window 20,7 --softcap 2 --alibi "
        "batch_heads --layout bshd "
    ), lines[0]
    assert lines[1] == "1/1 configurations passed"


def test_backward_compare_fails_a_perturbed_gradient_and_an_unwritten_one() -> None:
    from tessera_core.types import AttentionBackwardProblem

    problem = AttentionBackwardProblem(1, 1, 16, 16, 16)
    expected = verify.reference(problem, verify.random_inputs(problem, 0))
    assert verify.compare(problem, dict(expected), expected)[0]
    wrong = {**expected, "dk": expected["dk"] * 1.01}
    passed, _, _, reason = verify.compare(problem, wrong, expected)
    assert not passed and reason.startswith("dk rel_err=")
    unwritten = {**expected, "dv": np.full_like(expected["dv"], np.nan)}
    passed, _, _, reason = verify.compare(problem, unwritten, expected)
    assert not passed and "dv has NaN/inf elements" in reason


def test_cli_rejects_an_invalid_configuration_with_the_rule(capsys: pytest.CaptureFixture) -> None:
    config = {"block_m": 32, "block_n": 32, "block_k": 48, "num_warps": 2, "num_stages": 2}
    code = run_cli(
        verify.main,
        ["--op", "gemm", "--shape", "64x64x64", "--config", json.dumps(config), "--arch", ARCH],
        prog=verify.PROG,
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "block_k=48" in err and len(err.splitlines()) == 1


def test_cli_exits_non_zero_when_a_configuration_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real = verify.reference

    def off_by_a_little(problem: Problem, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = real(problem, inputs)
        expected["c"] = expected["c"] * (1 + 8 * verify.UNIT_ROUNDOFF["fp16"])
        return expected

    monkeypatch.setattr(verify, "reference", off_by_a_little)
    code = verify.main(["--op", "gemm", "--shape", "33x17x40", "--arch", ARCH, "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("FAIL gemm fp16 33x17x40") and "rel_err > 2.0e-03" in out


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_compare_accepts_rounding_and_rejects_larger_errors(dtype: str) -> None:
    problem = GemmProblem(16, 24, 8, dtype=dtype)
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 24))
    u = verify.UNIT_ROUNDOFF[dtype]
    rounded = ref.astype(verify.emulator.NUMPY_DTYPES[dtype])
    assert verify.compare(problem, {"c": rounded}, {"c": ref})[0]
    assert not verify.compare(problem, {"c": ref * (1 + 6 * u)}, {"c": ref})[0]
    unwritten = rounded.copy()
    unwritten[3, 5] = np.nan
    passed, _, _, reason = verify.compare(problem, {"c": unwritten}, {"c": ref})
    assert not passed and reason == "1 c elements NaN (unwritten?)"


def _sweep(problem: Problem) -> None:
    configs = get_family(problem.family).space.valid_configs(problem, ARCH)
    assert configs, f"no valid configuration for {problem}"
    lines: list[str] = []
    verdicts = verify.verify(
        problem, configs, seed=0, arch=ARCH, jobs=knobs.default_jobs(), report=lines.append
    )
    failures = [line for line, v in zip(lines, verdicts, strict=True) if not v.passed]
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(900)  # ~45 s on 2 shared cores; the compiler does most of the work
def test_every_valid_attention_configuration_passes() -> None:
    # Two query blocks (ragged), 4+ key tiles so every pipeline stage is refilled, a ragged and
    # causal key range with seq_q != seq_kv.
    _sweep(AttentionProblem(1, 2, 65, 400, 64, causal=True))


@pytest.mark.timeout(900)  # ~80 s on 2 shared cores (225 configurations)
def test_every_valid_gemm_configuration_passes() -> None:
    # M, N, K multiples of no tile; K long enough that the deepest pipeline refills a stage.
    _sweep(GemmProblem(67, 45, 300))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--config", "[1,2]"), "--config '[1,2]': expected a JSON object, e.g. {"),
        (("--config", "{not json"), "--config '{not json': expected a JSON object"),
        (("--config", '{"block_m": "x"}'), "--config: config="),
        (("--seed", "-1"), "--seed: '-1': expected an integer >= 0"),
        (("--jobs", "0"), "--jobs: '0': expected an integer >= 1"),
        (("--arch", "sm_75"), "--arch: invalid choice: 'sm_75'"),
        (("--shape", "1x1x64x76"), "--shape 1x1x64x76: attention_fwd 1x1x64x64x76 is not"),
        (("--shape", "1x1x64"), "--shape 1x1x64: "),
        (("--gqa", "4"), "--gqa: '4': expected HEADS_Q:HEADS_KV"),
        (("--gqa", "4:3"), "--gqa: '4:3': expected HEADS_Q:HEADS_KV, positive integers"),
        (("--gqa", "2:1"), "--gqa 2:1: HEADS_Q=2 must equal --shape's heads=1"),
        (("--window", "8"), "--window: '8': expected LEFT,RIGHT, integers >= -1"),
        (("--window=-2,0",), "--window: '-2,0': expected LEFT,RIGHT"),
        (("--softcap", "0"), "--softcap: '0': expected a finite number > 0"),
        (("--alibi", "rows"), "--alibi: invalid choice: 'rows'"),
        (("--layout", "sbhd"), "--layout: invalid choice: 'sbhd'"),
        (("--op", "gemm", "--shape", "64x64x64", "--softcap", "30"), "--softcap applies to"),
        (("--op", "attention_bwd", "--shape", "1x1x64x264"), "attention_bwd 1x1x64x64x264 is"),
        (("--layout", "tn"), "--layout tn: attention takes bhsd, bshd"),
        (("--layout", "xy"), "--layout: invalid choice: 'xy'"),
        ((), "the compile cache directory (TESSERA_COMPILE_CACHE_DIR) /proc/tessera-cannot-create"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_status_2(args: tuple[str, ...], needle: str) -> None:
    argv = ["--op", "attention", "--shape", "1x1x64x64", *args]
    env = dict(os.environ)
    if args == ():
        env["TESSERA_COMPILE_CACHE_DIR"] = "/proc/tessera-cannot-create/compile"
    result = subprocess.run(
        [sys.executable, "-m", "generator.verify", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_verifies_a_transposed_gemm_layout() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "generator.verify", "--op", "gemm", "--shape", "67x45x93",
         "--layout", "tn", "--arch", ARCH],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS gemm fp16 67x45x93 --layout tn ")
