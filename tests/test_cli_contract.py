"""Every command-line entry point shares one contract: bad input is one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = (
    "generator.tune",
    "generator.verify",
    "generator.inspect",
    "autotune.hotspots",
    "autotune.replay",
    "autotune.report",
    "autotune.calibrate",
    "autotune.model_prior",
    "runtime.bench",
    "cache",
)
SCRIPTS = ("examples/basic_usage.py", "examples/train_step.py")
COMMANDS = [[sys.executable, "-m", m] for m in MODULES] + [
    [sys.executable, str(ROOT / s)] for s in SCRIPTS
]
IDS = [*MODULES, *SCRIPTS]


def _run(command: list[str], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def _assert_one_line_usage_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_an_unknown_option_is_one_line_and_exit_2(command: list[str]) -> None:
    _assert_one_line_usage_error(_run(command, "--no-such-option"), "error:")


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_malformed_environment_knob_is_one_line_and_exit_2(command: list[str]) -> None:
    done = _run(command, "--help", TESSERA_LOG_LEVEL="bogus")
    _assert_one_line_usage_error(done, "TESSERA_LOG_LEVEL")
