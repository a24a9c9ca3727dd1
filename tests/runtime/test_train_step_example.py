"""Smoke test of examples/train_step.py: the block trains through runtime.torch, loss goes down."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "train_step.py"


def test_train_step_example_trains_through_the_emulated_kernels(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "3", "--seq", "20", "--head-dim", "16"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    losses = [float(x) for x in re.findall(r"step +\d+: loss (\S+)", out)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # The forward and the backward reach their emulated generic kernels after one call.
    assert re.search(r"attention +\(forward \) +tier 1: +1 +tier 2: +2 +tier 3: +0", out), out
    assert re.search(r"attention_bwd +\(backward\) +tier 1: +1 +tier 2: +2 +tier 3: +0", out), out


def _example_main() -> Callable[[list[str]], int]:
    spec = importlib.util.spec_from_file_location("train_step", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main  # type: ignore[no-any-return]


def test_train_step_example_runs_in_process_on_tier_1(capsys: pytest.CaptureFixture[str]) -> None:
    main = _example_main()
    assert main(["--device", "cpu", "--steps", "2", "--seq", "9", "--dtype", "bf16"]) == 0
    assert "attention_bwd  (backward)  tier 1:   2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["--steps", "1"], ["--head-dim", "24"], ["--head-dim", "144"], ["--dtype", "fp32"]]
)
def test_train_step_example_refuses_bad_arguments_with_exit_status_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _example_main()([*args, "--device", "cpu"])
    assert info.value.code == 2
    assert args[0] in capsys.readouterr().err
