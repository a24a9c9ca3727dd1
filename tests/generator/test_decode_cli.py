"""`--op attention_decode` on generator.verify (in process) and generator.tune (a subprocess):
a shape that passes, the shape spelling in --help, bad shapes as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generator import verify

ROOT = Path(__file__).resolve().parents[2]
ARCH = "sm_80"


def test_verify_runs_a_paged_causal_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code = verify.main(
        ["--op", "attention_decode", "--shape", "2x4x2x2x100x32x16", "--causal", "--arch", ARCH]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("PASS attention_decode fp16 2x4x2x2x128x32x16 causal"), out


@pytest.mark.parametrize(
    "shape,needle",
    [("8x32x2048x64", "BxHQxHKVxSQxKVxD"), ("2x4x3x1x70x64", "multiple of heads_kv=3")],
)
def test_verify_bad_shapes_are_one_line(
    shape: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        verify.main(["--op", "attention_decode", "--shape", shape, "--arch", ARCH])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and needle in err and err.count("\n") == 1, err


def _tune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator.tune", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_tune_help_spells_the_decode_shape() -> None:
    result = _tune("--help")
    assert result.returncode == 0
    assert "attention_decode" in result.stdout and "BxHQxHKVxSQxKVxD" in result.stdout


def test_tune_stores_a_decode_kernel_under_its_bucket_key(tmp_path: Path) -> None:
    result = _tune(
        "--op", "attention_decode", "--shape", "2x4x2x1x100x16x16", "--trials", "1",
        "--arch", ARCH, "--cache-dir", str(tmp_path), "--json", "--jobs", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        row["kernel_key"]
        == "attention_decode.fp16.b2.hq4.hkv2.sq1.kv128.d16.page16.noncausal.sm_80"
    )
    assert row["objective_kind"] in ("model", "measured") and "num_splits" in row["config"]
