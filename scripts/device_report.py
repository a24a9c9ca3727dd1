"""The device check's report: device_report.json's layout and its Markdown rendering."""

from __future__ import annotations

import time
from typing import Any

import device_hopper_attention

FORMAT = "tessera-device-report/1"
SECTIONS = (
    *("toolchain", "compile", "gpu_tests", "correctness", "tune", "timings", "backward"),
    "hopper",
    "model",
)


def build_report(stages: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    """The JSON report: every stage's status, seconds and result, in a fixed layout."""
    return {
        "format": FORMAT,
        "dry_run": dry_run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": {
            name: stages.get(name, {"status": "not run", "seconds": 0.0, "result": {}})
            for name in (*SECTIONS, *(n for n in stages if n not in SECTIONS))
        },
    }


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):  # errors are small: keep their digits, times need one
            return f"{value:.2e}" if 0 < abs(value) < 0.1 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _hopper_lines(hopper: dict[str, Any]) -> list[str]:
    """The Hopper stage: gemm_sm90 and the mma.sync GEMM at 8192^3, model and measured."""
    rows = hopper.get("gemm", [])
    if not rows:
        return []
    base = hopper.get("gemm_baseline", {})
    fp8 = hopper.get("fp8", {})
    attention = hopper.get("attention", {})
    lines = ["", f"## Hopper (sm_90a) GEMM {hopper.get('problem')} bf16, TFLOP/s", ""]
    lines += _table(
        ["family", "arch", "config", "measured", "model bf16", "model e4m3", "SASS", "spills"],
        [
            [
                r["family"],
                r["arch"],
                r["config"],
                r.get("measured_tflops", r.get("error")),
                r.get("model_bf16_tflops"),
                r.get("model_e4m3_tflops"),
                r.get("sass"),
                r.get("spill_bytes"),
            ]
            for r in rows
        ],
    )
    fp8_rows = fp8.get("rows", [])
    if fp8_rows:
        lines += ["", "FP8 e4m3 (bf16 out, B^T [N, K]):", ""]
        lines += _table(
            ["family", "config", "measured", "model e4m3", "SASS", "spills"],
            [
                [
                    r["family"],
                    r["config"],
                    r.get("measured_tflops", r.get("error")),
                    r.get("model_e4m3_tflops"),
                    r.get("sass"),
                    r.get("spill_bytes"),
                ]
                for r in fp8_rows
            ],
        )
    lines += [
        "",
        f"- timing: {hopper.get('timing', 'measured')}",
        f"- torch.matmul bf16: {base.get('torch_matmul_tflops', '-')}; check "
        f"{base.get('check', '-')}",
        f"- fp8 e4m3: ours {fp8.get('family') or '-'} ({fp8.get('reason')}); "
        f"torch._scaled_mm {fp8.get('torch_scaled_mm_tflops', '-')}; check {fp8.get('check', '-')}",
        f"- attention {attention.get('problem', '')} sm_90a: "
        + json_line({k: v for k, v in attention.items() if k != "problem"}),
    ]
    return lines + device_hopper_attention.report_lines(hopper.get("attention_sweep", []))


def json_line(data: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in data.items())


def report_markdown(report: dict[str, Any]) -> str:
    """device_report.md: stage statuses, then each stage's numbers as tables."""
    stages = report["stages"]
    lines = [f"# Device check{' (dry run)' if report['dry_run'] else ''}", ""]
    lines += [f"Created {report['created']}, {report.get('wall_s', '?')} s in all.", ""]
    lines += _table(
        ["stage", "status", "seconds"],
        [[name, s.get("status"), s.get("seconds")] for name, s in stages.items()],
    )
    tool = stages["toolchain"].get("result", {})
    if tool:
        lines += ["", "## Toolchain", ""]
        keys = ("device_name", "driver_cuda_version", "nvrtc", "nvrtc_library", "torch_cuda")
        for key in (*keys, "cubin_loads"):
            lines.append(f"- {key}: {tool.get(key, '-')}")
        for name, version in tool.get("packages", {}).items():
            lines.append(f"- {name}: {version or 'not installed'}")
    kernels = stages["compile"].get("result", {}).get("kernels", [])
    if kernels:
        lines += ["", "## Compiled kernels (ptxas resources, SASS main loop)", ""]
        lines += _table(
            ["problem", "config", "regs", "spills", "HMMA", "LDSM", "BAR", "loop instr"],
            [
                [
                    k["problem"],
                    k["config"],
                    k["resources"]["registers"],
                    k["resources"]["spill_store_bytes"] + k["resources"]["spill_load_bytes"],
                    k["main_loop"]["HMMA"],
                    k["main_loop"]["LDSM"],
                    k["main_loop"]["BAR"],
                    k["main_loop_instructions"],
                ]
                for k in kernels
            ],
        )
    tests = stages["gpu_tests"].get("result", {})
    if tests:
        lines += ["", "## GPU tests", "", f"exit {tests.get('exit')}: {tests.get('summary')}"]
    checks = stages["correctness"].get("result", {}).get("rows", [])
    if checks:
        lines += ["", "## Correctness against PyTorch (float64 reference, same device)", ""]
        lines += _table(
            ["problem", "dtype", "causal", "config", "rel err", "passed"],
            [
                [r["problem"], r["dtype"], r["causal"], r["config"], r.get("rel_err"), r["passed"]]
                for r in checks
            ],
        )
    tune = stages["tune"].get("result", {})
    if tune.get("tuned"):
        lines += ["", "## Measured tuning", ""]
        lines += _table(
            ["kernel", "config", "TFLOP/s", "trials", "spearman(model, measured)"],
            [
                [key, e["config"], e["tflops"], e["trials"], e["spearman_model_vs_measured"]]
                for key, e in tune["tuned"].items()
            ],
        )
        for fit in tune.get("calibration", []) if isinstance(tune.get("calibration"), list) else []:
            lines.append(
                f"\nCalibration {fit['arch']} ({fit['records']} records): spearman "
                f"{fit['before']['spearman']:.3f} -> {fit['after']['spearman']:.3f}, median "
                f"|log ratio| {fit['before']['median_abs_log_ratio']:.3f} -> "
                f"{fit['after']['median_abs_log_ratio']:.3f}; factors {fit['factors']}"
            )
    timings = stages["timings"].get("result", {}).get("rows", [])
    if timings:
        lines += ["", "## Side by side (TFLOP/s, CUDA events, median of 25, L2 flushed)", ""]
        lines += _table(
            ["problem", "causal", "ours", "SDPA flash", "SDPA cuDNN", "torch.matmul", "config"],
            [
                [
                    r["problem"],
                    r["causal"],
                    r.get("ours_tflops"),
                    r.get("sdpa_flash_tflops"),
                    r.get("sdpa_cudnn_tflops"),
                    r.get("torch_matmul_tflops"),
                    f"{r['config']} ({r['config_source']})",
                ]
                for r in timings
            ],
        )
    lines += _backward_lines(stages.get("backward", {}).get("result", {}))
    lines += _hopper_lines(stages.get("hopper", {}).get("result", {}))
    model = stages["model"].get("result", {})
    if model.get("table"):
        lines += ["", f"## Model predictions vs published ({model['config_source']})", ""]
        lines += model["table"]
    return "\n".join(lines) + "\n"


def _backward_lines(result: dict[str, Any]) -> list[str]:
    """The backward stage: checks against float64 autograd, then times beside SDPA flash."""
    lines: list[str] = []
    checks = result.get("checks", [])
    if checks:
        lines += [
            "",
            f"## Backward vs float64 autograd ({result.get('passed')}/{result.get('total')})",
            "",
        ]
        lines += _table(
            ["problem", "dtype", "causal", "config", "dq", "dk", "dv", "bound", "passed"],
            [
                [r["problem"], r["dtype"], r["causal"], r["config"]]
                + [r.get("rel_err", {}).get(n) for n in ("dq", "dk", "dv")]
                + [r.get("tolerance"), r["passed"] if "error" not in r else r["error"]]
                for r in checks
            ],
        )
    timings = result.get("timings", [])
    if timings:
        lines += ["", f"## Backward beside SDPA flash (TFLOP/s, {result['flops_convention']})", ""]
        lines += _table(
            ["problem", "causal", "ours", "SDPA flash", "ours / flash", "config"],
            [
                [
                    r["problem"],
                    r["causal"],
                    r.get("ours_tflops"),
                    r.get("sdpa_flash_tflops"),
                    r.get("speedup_vs_flash"),
                    r.get("config", "; ".join(r.get("errors", []))),
                ]
                for r in timings
            ],
        )
    return lines
