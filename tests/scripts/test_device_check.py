"""scripts/device_check.sh --dry-run: the CPU half of the device check, and its report skeleton."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GPU_STAGES = ("gpu_tests", "correctness", "tune", "timings", "backward")
CPU_STAGES = ("toolchain", "compile", "hopper", "model")


def test_dry_run_writes_the_report_skeleton(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "scripts/device_check.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=290,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "device_report.json").read_text())
    assert report["format"] == "tessera-device-report/1" and report["dry_run"] is True
    stages = report["stages"]
    for name in GPU_STAGES:
        assert stages[name]["status"] == "skipped (dry run)"
    for name in CPU_STAGES:
        assert stages[name]["status"] == "ok", (name, (out / "stages.log").read_text()[-3000:])
    assert stages["toolchain"]["result"]["nvrtc"]
    kernels = stages["compile"]["result"]["kernels"]
    assert len(kernels) == 3
    for kernel in kernels:
        assert kernel["main_loop"]["HMMA"] > 0
    hopper = stages["hopper"]
    assert hopper["status"] == "ok", (out / "stages.log").read_text()[-3000:]
    rows = hopper["result"]["gemm"]
    assert {(r["family"], r["arch"]) for r in rows} == {("gemm_sm90", "sm_90a"), ("gemm", "sm_90")}
    for row in rows:
        tensor_op = "HGMMA" if row["family"] == "gemm_sm90" else "HMMA"
        assert row["sass"][tensor_op] > 0 and row["spill_bytes"] == 0
        assert row["model_bf16_tflops"] > 0
    hopper_rows = [r for r in rows if r["family"] == "gemm_sm90"]
    assert all(r["sass"]["UTMALDG"] > 0 and r["sass"]["SYNCS"] > 0 for r in hopper_rows)
    assert all(r["model_e4m3_tflops"] > r["model_bf16_tflops"] for r in hopper_rows)
    assert hopper["result"]["timing"] == "skipped: dry run"
    fp8 = hopper["result"]["fp8"]
    assert fp8["family"] == "gemm_sm90" and fp8["rows"]
    for row in fp8["rows"]:
        assert row["sass"]["QGMMA"] > 0 and row["sass"]["HGMMA"] == 0 and row["spill_bytes"] == 0
        assert row["model_e4m3_tflops"] > 0
    attention = hopper["result"]["attention"]
    assert attention["family"] == "attention_sm90" and attention["reason"] is None
    model = stages["model"]["result"]
    assert len(model["rows"]) == 8
    assert all(row["tuned"] > 0 and row["fa2_tiles"] > 0 for row in model["rows"])
    markdown = (out / "device_report.md").read_text()
    headings = (
        "# Device check (dry run)",
        "## Toolchain",
        "## Hopper (sm_90a)",
        "## Model predictions",
    )
    for heading in headings:
        assert heading in markdown
    assert "| sm_90 | 8x16x2048x2048x64 | False |" in markdown
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back


def test_a_failing_stage_is_recorded_and_the_next_one_still_runs(tmp_path, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    device_check = importlib.import_module("device_check")
    monkeypatch.setattr(
        device_check, "STAGES", (("no_such_stage", 60, 60, False), ("toolchain", 60, 60, False))
    )
    out = tmp_path / "out"
    assert device_check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads((out / "device_report.json").read_text())
    assert report["stages"]["toolchain"]["status"] == "ok"
    assert report["stages"]["no_such_stage"]["status"] == "failed (exit 1)"
    assert report["stages"]["compile"]["status"] == "not run"
    assert "AttributeError" in (out / "stages.log").read_text()
