"""Smoke and end-to-end tests of `python -m generator.tune` in real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator.tune", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=None if env is None else {**os.environ, **env},
    )


def test_help_explains_the_options() -> None:
    result = _tune("--help")
    assert result.returncode == 0
    for option in ("--shape", "--trials", "--timeout", "--jobs", "--seed", "--retune", "--json"):
        assert option in result.stdout
    for option in ("--gqa HQ:HKV", "--window LEFT,RIGHT", "--softcap X", "--alibi", "--layout"):
        assert option in result.stdout


def test_tune_keys_and_stores_the_attention_variants(tmp_path: Path) -> None:
    # NVRTC compiles the variant kernel for the target; its key and metadata name every variant.
    cache_dir = tmp_path / "kernels"
    variants = ("--gqa", "4:2", "--window", "24,0", "--softcap", "30", "--alibi", "--layout")
    args = ("--shape", "1x4x80x96x40", *variants, "bshd", "--arch", "sm_80", "--trials", "1")
    result = _tune(*args, "--cache-dir", str(cache_dir), "--json")
    assert result.returncode == 0, result.stderr
    tuned = json.loads(result.stdout)
    assert tuned["kernel_key"] == (
        "attention_fwd.fp16.b1.h4.sq80.skv96.d40.noncausal.hkv2.win24_0.cap30.alibi_heads.bshd"
        ".sm_80"
    )
    from runtime import load_specialized
    from tessera_core.types import AttentionProblem

    kernel = load_specialized(tuned["kernel_key"], cache_dirs=[cache_dir])
    assert kernel.problem == AttentionProblem(
        1, 4, 80, 96, 40, heads_kv=2, window_left=24, window_right=0, softcap=30.0,
        alibi="heads", layout="bshd",
    )  # fmt: skip


SHAPE = ("--shape", "1x1x64x64", "--trials", "1")
UNWRITABLE = "/proc/tessera-cannot-create/kernels"  # mkdir fails there, even for root


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("--shape", "8x16x2048"), {}, "BxHxSxD"),
        (("--shape", "8xAx2048x64"), {}, "BxHxSxD"),
        (("--op", "gemm", "--shape", "1x2"), {}, "MxNxK"),
        (("--shape", "8x16x2048x64", "--trials", "0"), {}, "--trials"),
        (("--shape", "8x16x2048x64", "--arch", "sm_70"), {}, "--arch"),
        ((*SHAPE, "--seed", "-1"), {}, "--seed: '-1': expected an integer >= 0"),
        ((*SHAPE, "--timeout", "nan"), {}, "--timeout: 'nan': expected a finite number > 0"),
        (SHAPE, {"TESSERA_JOBS": "abc"}, "TESSERA_JOBS='abc': expected an integer >= 1"),
        (SHAPE, {"TESSERA_CACHE_MAX_BYTES": "0"}, "TESSERA_CACHE_MAX_BYTES='0': expected"),
        (SHAPE, {"TESSERA_ARCH": "sm_75"}, "TESSERA_ARCH='sm_75': expected one of sm_80"),
        (SHAPE, {"TESSERA_LOG_LEVEL": "bogus"}, "TESSERA_LOG_LEVEL='bogus': expected one of"),
        # well-formed but unsupported: the one reason, not every rejected configuration
        (("--shape", "1x1x64x76"), {}, "--shape 1x1x64x76: attention_fwd 1x1x64x64x76 is not"),
        (("--shape", "1x70000x64x64"), {}, "grid"),
        ((*SHAPE, "--gqa", "16:5"), {}, "--gqa: '16:5': expected HEADS_Q:HEADS_KV"),
        ((*SHAPE, "--gqa", "8:2"), {}, "--gqa 8:2: HEADS_Q=8 must equal --shape's heads=1"),
        ((*SHAPE, "--window", "a,b"), {}, "--window: 'a,b': expected LEFT,RIGHT"),
        ((*SHAPE, "--softcap", "inf"), {}, "--softcap: 'inf': expected a finite number > 0"),
        ((*SHAPE, "--layout", "hbsd"), {}, "--layout: invalid choice: 'hbsd'"),
        ((*SHAPE, "--cache-dir", UNWRITABLE), {}, f"--cache-dir {UNWRITABLE}: cannot create"),
        (SHAPE, {"TESSERA_CACHE_DIR": UNWRITABLE}, "(TESSERA_CACHE_DIR) /proc/tessera-cannot"),
        (SHAPE, {"TESSERA_COMPILE_CACHE_DIR": UNWRITABLE}, "(TESSERA_COMPILE_CACHE_DIR) /proc/"),
    ],
)
def test_malformed_arguments_exit_2_with_one_line(
    args: tuple[str, ...], env: dict[str, str], needle: str
) -> None:
    result = _tune(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_trace_of_only_malformed_lines_is_counted_and_refused(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("[" * 100_000 + "\n" + '{"time_s": 1e999}\n' + "not json\n")
    result = _tune("--from-trace", str(trace), "--trials", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    warning, error = result.stderr.splitlines()
    assert warning.endswith("skipped 3 malformed line(s)")
    assert "the trace holds no successful call" in error and error.endswith("(see --help)")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_the_search_is_one_line_and_exit_status_130(tmp_path: Path) -> None:
    tune = subprocess.Popen(
        [sys.executable, "-m", "generator.tune", "--shape", "1x2x256x64", "--trials", "500",
         "--jobs", "1", "--cache-dir", str(tmp_path / "kernels")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # A shell starts background jobs with SIGINT ignored, and children inherit that; the
        # CLI under test must get Ctrl-C whatever the environment pytest itself runs in.
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert tune.stderr is not None
    seen = b""
    try:
        # Wait for the first finished trial: the search runs and its compile worker is up (an
        # interrupt while a worker is still being spawned is the spawn's business, not ours).
        while not re.search(rb" [1-9][0-9]*/500 ", seen):
            chunk = os.read(tune.stderr.fileno(), 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        tune.send_signal(signal.SIGINT)
        _, rest = tune.communicate(timeout=120)
    finally:
        if tune.poll() is None:  # a failed test never leaves a 500-trial search behind
            tune.kill()
            tune.communicate()
    stderr = (seen + rest).decode(errors="replace")
    assert tune.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    progress = "tune attention_fwd "  # the progress bar, redrawn in place
    lines = [line for line in stderr.splitlines() if line.strip() and progress not in line]
    assert lines == ["python -m generator.tune: interrupted"], stderr


def test_tune_stores_a_kernel_that_load_specialized_returns_then_hits(tmp_path: Path) -> None:
    cache_dir = tmp_path / "kernels"
    args = ("--shape", "1x2x100x64", "--causal", "--arch", "sm_80", "--trials", "3", "--jobs", "2")
    first = _tune(*args, "--cache-dir", str(cache_dir), "--json")
    assert first.returncode == 0, first.stderr
    tuned = json.loads(first.stdout)
    assert tuned["cache_hit"] is False
    assert tuned["objective_kind"] == "model"  # no GPU here: never passed off as measured
    assert tuned["trials_run"] == 3
    assert tuned["kernel_key"] == "attention_fwd.fp16.b1.h2.sq100.skv100.d64.causal.sm_80"

    from runtime import load_specialized

    kernel = load_specialized(tuned["kernel_key"], cache_dirs=[cache_dir])
    assert kernel.config.to_dict() == tuned["config"]
    assert kernel.cubin[:4] == b"\x7fELF"
    assert kernel.metadata["objective"]["kind"] == "model"

    second = _tune(*args, "--cache-dir", str(cache_dir), "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["cache_hit"] is True
    assert again["config"] == tuned["config"]
    assert again["time_ms"] == tuned["time_ms"]

    table = _tune(*args, "--cache-dir", str(cache_dir))
    assert table.returncode == 0
    assert "cache hit" in table.stdout and "model" in table.stdout


def test_gemm_tune_prints_the_best_configurations_labelled_model(tmp_path: Path) -> None:
    result = _tune(
        "--op",
        "gemm",
        "--shape",
        "67x45x93",
        "--arch",
        "sm_90",
        "--trials",
        "2",
        "--cache-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "gemm.fp16.m67.n45.k93.sm_90" in result.stdout
    assert "times are model" in result.stdout


def test_an_unsupported_shape_exits_2_with_its_one_reason(tmp_path: Path) -> None:
    # Every configuration is rejected for the same reason (head_dim): that one line, not a
    # list of 324 rejected configurations, and no search.
    result = _tune("--shape", "1x1x64x264", "--arch", "sm_90", "--cache-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "python -m generator.tune: error: --shape 1x1x64x264: attention_fwd 1x1x64x64x264 is "
        "not supported on sm_90: head_dim: head_dim=264 must be a multiple of 8 and at most 256"
    ]
    assert not any(tmp_path.rglob("*.kernel")), "nothing may be cached for a failed tune"


def test_attention_bwd_tune_stores_the_kernel_the_runtime_serves_at_tier_3(tmp_path: Path) -> None:
    from generator.grad_check import (
        GRAD_TOL_ULPS,
        backward_inputs,
        grad_errors_ulps,
        reference_grads,
    )
    from runtime import Runtime, RuntimeConfig, load_specialized
    from tessera_core.types import AttentionBackwardProblem

    cache_dir = tmp_path / "kernels"
    result = _tune(
        "--op", "attention_bwd", "--shape", "1x2x45x29x32", "--causal", "--arch", "sm_80",
        "--trials", "2", "--jobs", "2", "--cache-dir", str(cache_dir), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tuned = json.loads(result.stdout)
    assert tuned["kernel_key"] == "attention_bwd.fp16.b1.h2.sq45.skv29.d32.causal.sm_80"
    assert tuned["objective_kind"] == "model" and tuned["trials_run"] == 2
    kernel = load_specialized(tuned["kernel_key"], cache_dirs=[cache_dir])
    assert kernel.config.to_dict() == tuned["config"] and "deterministic" in tuned["config"]

    problem = AttentionBackwardProblem(1, 2, 45, 29, 32, causal=True)
    inputs = backward_inputs(problem, seed=2)
    args = [inputs[n] for n in ("q", "k", "v", "o", "lse", "do")]
    config = RuntimeConfig(
        device="emulator", arch="sm_80", tier2=False, tier3_min_calls=0, tuning_workers=0,
        cache_dirs=(cache_dir,),
    )  # fmt: skip
    with Runtime(config=config) as rt:
        grads = rt.attention_backward(*args, causal=True)
        (call,) = [r for r in rt.history() if r.event == "call"]
    assert (call.tier, call.kernel_key, call.config) == (3, tuned["kernel_key"], tuned["config"])
    got = dict(zip(("dq", "dk", "dv"), grads, strict=True))
    errors = grad_errors_ulps(problem, got, reference_grads(problem, inputs))
    assert all(err <= GRAD_TOL_ULPS for err in errors.values()), errors


def test_an_unsupported_attention_bwd_shape_exits_2_with_its_one_reason(tmp_path: Path) -> None:
    result = _tune(
        "--op", "attention_bwd", "--shape", "1x1x64x264", "--arch", "sm_90",
        "--cache-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "python -m generator.tune: error: --shape 1x1x64x264: attention_bwd 1x1x64x64x264 is "
        "not supported on sm_90: head_dim: head_dim=264 must be a multiple of 8 and at most 256"
    ]


def test_attention_bwd_tune_takes_the_variant_flags_and_the_runtime_serves_them(
    tmp_path: Path,
) -> None:
    from generator.grad_check import (
        GRAD_TOL_ULPS,
        backward_inputs,
        grad_errors_ulps,
        reference_grads,
    )
    from runtime import Runtime, RuntimeConfig
    from tessera_core.types import AttentionBackwardProblem

    cache_dir = tmp_path / "kernels"
    result = _tune(
        "--op", "attention_bwd", "--shape", "1x4x45x70x24", "--gqa", "4:2", "--window", "20,7",
        "--softcap", "3", "--alibi", "--layout", "bshd", "--arch", "sm_80", "--trials", "2",
        "--jobs", "2", "--cache-dir", str(cache_dir), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tuned = json.loads(result.stdout)
    problem = AttentionBackwardProblem(
        1, 4, 45, 70, 24, heads_kv=2, window_left=20, window_right=7, softcap=3.0,
        alibi="heads", layout="bshd",
    )  # fmt: skip
    assert tuned["kernel_key"] == problem.kernel_key("sm_80")
    assert tuned["kernel_key"].endswith(".hkv2.win20_7.cap3.alibi_heads.bshd.sm_80")

    inputs = backward_inputs(problem, seed=3)
    args = [inputs[n] for n in ("q", "k", "v", "o", "lse", "do")]
    config = RuntimeConfig(
        device="emulator", arch="sm_80", tier2=False, tier3_min_calls=0, tuning_workers=0,
        cache_dirs=(cache_dir,),
    )  # fmt: skip
    with Runtime(config=config) as rt:
        grads = rt.attention_backward(
            *args, window_size=(20, 7), softcap=3.0, alibi_slopes=inputs["alibi_slopes"],
            layout="bshd",
        )  # fmt: skip
        (call,) = [r for r in rt.history() if r.event == "call"]
    assert (call.tier, call.kernel_key) == (3, tuned["kernel_key"])
    got = dict(zip(("dq", "dk", "dv"), grads, strict=True))
    errors = grad_errors_ulps(problem, got, reference_grads(problem, inputs))
    assert all(err <= GRAD_TOL_ULPS for err in errors.values()), errors
