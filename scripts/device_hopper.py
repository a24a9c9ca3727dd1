"""The device check's Hopper stage: gemm_sm90 beside the mma.sync GEMM, torch.matmul and
torch._scaled_mm at 8192^3, and the sm_90a attention family (attention_sm90) beside the
mma.sync attention and SDPA's flash and cuDNN backends.

Which family runs is templates.registry's choice on sm_90a (its ROUTES); a problem the routed
family refuses is reported with the reason instead of timed.
Without a device of compute capability 9.0 (or in a dry run) the stage compiles the kernels,
counts their Hopper opcodes and reports the model's predictions only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import device_hopper_attention
from device_stages import (
    L2_FLUSH_BYTES,
    OurKernel,
    _attention_tensors,
    _check,
    _compile,
    _gemm_tensors,
    _median_ms,
    _tflops,
    default_and_completed,
)

from tessera_core.types import AttentionProblem, GemmProblem, Problem, TileConfig

ARCH = "sm_90a"
MMA_SYNC_ARCH = "sm_90"  # the same device through the mma.sync families
GEMM = GemmProblem(8192, 8192, 8192, dtype="bf16")
GEMM_FP8 = GemmProblem(8192, 8192, 8192, dtype="e4m3")  # bf16 out; B^T [N, K] as _scaled_mm's
GEMM_FP8_CHECK = GemmProblem(1000, 1504, 720, dtype="e4m3")
GEMM_CHECK = GemmProblem(1000, 1504, 712, dtype="bf16")  # ragged M; N, K multiples of 8
# Beside the default: the tiles the lent H200 measured fastest (benchmarks/device_gemm_sm90.py).
GEMM_CONFIGS = (
    {"block_m": 192, "block_n": 128, "num_warps": 16, "num_stages": 4},
    {"block_m": 192, "block_n": 192, "num_warps": 16, "num_stages": 4},
)
FP8_E4M3_MAX = 448.0
# The attention target (fp16, non-causal), and a shape small enough for a float64 check.
ATTENTION = AttentionProblem(8, 16, 8192, 8192, 128)
ATTENTION_CHECK = AttentionProblem(2, 4, 1024, 1024, 128)
HOPPER_OPCODES = ("HGMMA", "QGMMA", "UTMALDG", "SYNCS", "HMMA")


def _family_and_reason(problem: Problem) -> tuple[str, str | None]:
    """The family serving `problem` on sm_90a and, for the op's own, why no Hopper one does."""
    from templates.registry import ROUTES, select

    selection = select(problem, ARCH)
    reason = selection.fallback_reason
    routed = any(r.op == problem.op and r.arch == ARCH for r in ROUTES)
    if reason is None and selection.family.name == problem.family and not routed:
        reason = f"no {ARCH} {problem.op} family is routed in templates.registry.ROUTES"
    return selection.family.name, reason


def _configs(problem: Problem) -> list[TileConfig]:
    from templates.registry import family_for

    partials = GEMM_CONFIGS if isinstance(problem, GemmProblem) else ()
    return default_and_completed(family_for(problem, ARCH), problem, ARCH, partials)


def _compiled_row(problem: Problem, config: TileConfig, arch: str) -> dict[str, Any]:
    """Compile for `arch`: resources, the Hopper opcodes of the SASS, the model's TFLOP/s."""
    from autotune.cost_model import estimate
    from autotune.objective import main_loop_counts
    from generator import sass
    from templates.registry import family_for

    family = family_for(problem, arch)
    compiled = _compile(problem, config, arch)
    row: dict[str, Any] = {"family": family.name, "arch": arch, "config": str(config)}
    row["spill_bytes"] = compiled.resources.spill_bytes
    try:
        counts = sass.instruction_counts(compiled.cubin)
        row["sass"] = {op: counts.get(op, 0) for op in HOPPER_OPCODES}
    except Exception as exc:  # no cuobjdump: the numbers above still stand
        row["sass"] = f"unavailable ({type(exc).__name__})"
    # A 16-bit wgmma kernel also gets the model's e4m3 figure on its tiles (k32 at twice the
    # rate); an e4m3 kernel its own.
    dtypes = ("bf16", "e4m3") if family.name == "gemm_sm90" else (problem.dtype,)
    if problem.dtype == "e4m3":
        dtypes = ("e4m3",)
    for dtype in dtypes:
        cost = estimate(
            problem,
            config,
            compiled.resources,
            dynamic_smem_bytes=family.smem_bytes(problem, config),
            arch=arch,
            loop_counts=main_loop_counts(compiled),
            family=family.name,
            input_dtype=dtype,
        )
        row[f"model_{dtype}_tflops"] = _tflops(problem, cost.time_ms)
    return row


def _device_reason(dry_run: bool) -> str | None:
    """Why nothing is timed here (None: a device that runs sm_90a cubins is present)."""
    from generator.gpu import probe
    from tessera_core.hardware import native_arch

    gpu = probe()
    if dry_run:
        return "dry run"
    if not gpu.available or gpu.arch is None:
        return f"no GPU ({gpu.reason})"
    if native_arch(gpu.arch) != ARCH:
        return f"a {gpu.arch} device does not run {ARCH} cubins"
    return None


def _time_gemm(rows: list[dict[str, Any]], flush: Any) -> dict[str, Any]:
    """Ours (each sm_90a config, the sm_90 mma.sync default) and torch.matmul at 8192^3 bf16."""
    import torch

    tensors = _gemm_tensors(GEMM, 1)
    for row in rows:
        config = TileConfig.from_dict(json.loads(row["config_json"]))
        try:
            kernel = OurKernel(GEMM, config, row["arch"], tensors)
            row["measured_tflops"] = _tflops(GEMM, _median_ms(kernel, flush))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    a, b = tensors["a"], tensors["b"]
    baseline = {"torch_matmul_tflops": _tflops(GEMM, _median_ms(lambda: torch.matmul(a, b), flush))}
    check = _gemm_tensors(GEMM_CHECK, 2)
    OurKernel(GEMM_CHECK, _configs(GEMM_CHECK)[0], ARCH, check)()
    torch.cuda.synchronize()
    baseline["check"] = {"problem": GEMM_CHECK.shape_str(), **_check(GEMM_CHECK, check)}
    return baseline


def _fp8_tensors(problem: GemmProblem, seed: int) -> dict[str, Any]:
    """e4m3 A [M, K] and B^T [N, K] (standard normals, well inside e4m3's +-448), C bf16/NaN."""
    import torch

    torch.manual_seed(seed)
    fp8 = torch.float8_e4m3fn
    return {
        "a": torch.randn(problem.m, problem.k, device="cuda").to(fp8),
        "b": torch.randn(problem.n, problem.k, device="cuda").to(fp8),
        "c": torch.full((problem.m, problem.n), float("nan"), device="cuda", dtype=torch.bfloat16),
    }


def _time_fp8(rows: list[dict[str, Any]], flush: Any) -> dict[str, Any]:
    """Ours in e4m3 (each config) at 8192^3, and a float64 check on the dequantized inputs."""
    import torch

    tensors = _fp8_tensors(GEMM_FP8, 1)
    for row in rows:
        config = TileConfig.from_dict(json.loads(row["config_json"]))
        try:
            kernel = OurKernel(GEMM_FP8, config, ARCH, tensors)
            row["measured_tflops"] = _tflops(GEMM_FP8, _median_ms(kernel, flush))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    check = _fp8_tensors(GEMM_FP8_CHECK, 2)
    OurKernel(GEMM_FP8_CHECK, _configs(GEMM_FP8_CHECK)[0], ARCH, check)()
    torch.cuda.synchronize()
    want = check["a"].double() @ check["b"].double().T
    got = check["c"].double()
    rel = ((got - want).norm() / want.norm()).item()
    bound = 2 * 2.0**-8  # C's bf16 rounding, twice: the inputs are exact (dequantized)
    return {"problem": GEMM_FP8_CHECK.shape_str(), "rel_err": rel, "bound": bound,
            "passed": rel <= bound}  # fmt: skip


def _time_scaled_mm(flush: Any) -> dict[str, Any]:
    """torch._scaled_mm with e4m3 inputs (per-tensor scales 1, bf16 out) at 8192^3."""
    import torch

    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return {"torch_scaled_mm_tflops": None, "reason": "this torch has no _scaled_mm / e4m3"}
    m, n, k = GEMM.m, GEMM.n, GEMM.k
    a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn).t()  # column-major B
    one = torch.ones((), device="cuda")

    def call() -> None:
        torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

    try:
        call()
        return {"torch_scaled_mm_tflops": _tflops(GEMM, _median_ms(call, flush))}
    except Exception as exc:
        return {"torch_scaled_mm_tflops": None, "reason": f"{type(exc).__name__}: {exc}"[:200]}


def _time_attention(flush: Any) -> dict[str, Any]:
    """The family serving ATTENTION on sm_90a beside attention_fwd (mma.sync) and SDPA."""
    import torch
    from device_tuning import _sdpa

    family, reason = _family_and_reason(ATTENTION)
    result: dict[str, Any] = {"problem": ATTENTION.shape_str(), "family": family}
    if family == ATTENTION.family:
        result["skipped"] = reason
        return result
    check = _attention_tensors(ATTENTION_CHECK, 2)
    OurKernel(ATTENTION_CHECK, _configs(ATTENTION_CHECK)[0], ARCH, check)()
    torch.cuda.synchronize()
    result["check"] = {"problem": ATTENTION_CHECK.shape_str(), **_check(ATTENTION_CHECK, check)}
    tensors = _attention_tensors(ATTENTION, 1)
    ours = OurKernel(ATTENTION, _configs(ATTENTION)[0], ARCH, tensors)
    result["ours_tflops"] = _tflops(ATTENTION, _median_ms(ours, flush))
    from templates.registry import family_for

    fa2 = family_for(ATTENTION, MMA_SYNC_ARCH).default_config(ATTENTION, MMA_SYNC_ARCH)
    mma_sync = OurKernel(ATTENTION, fa2, MMA_SYNC_ARCH, tensors)
    result["mma_sync_tflops"] = _tflops(ATTENTION, _median_ms(mma_sync, flush))
    for name, backend in (("sdpa_flash", "FLASH_ATTENTION"), ("sdpa_cudnn", "CUDNN_ATTENTION")):
        try:
            result[f"{name}_tflops"] = _tflops(
                ATTENTION, _median_ms(_sdpa(ATTENTION, tensors, backend), flush)
            )
        except Exception as exc:
            result[f"{name}_tflops"] = None
            result[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return result


def stage_hopper(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Compile, count and model the sm_90a kernels; time them on a device that runs sm_90a."""
    rows = [
        {**_compiled_row(GEMM, config, ARCH), "config_json": config.key()}
        for config in _configs(GEMM)
    ]
    from templates.registry import family_for

    mma_sync = family_for(GEMM, MMA_SYNC_ARCH).default_config(GEMM, MMA_SYNC_ARCH)
    rows.append({**_compiled_row(GEMM, mma_sync, MMA_SYNC_ARCH), "config_json": mma_sync.key()})
    result: dict[str, Any] = {"problem": GEMM.shape_str(), "gemm": rows}
    fp8_family, fp8_reason = _fp8_family()
    fp8_rows = [
        {**_compiled_row(GEMM_FP8, config, ARCH), "config_json": config.key()}
        for config in _configs(GEMM_FP8)[:2]
    ]
    result["fp8"] = {"family": fp8_family, "reason": fp8_reason, "rows": fp8_rows}
    attention_family, attention_reason = _family_and_reason(ATTENTION)
    result["attention"] = {"family": attention_family, "reason": attention_reason}
    (work / "hopper.json").write_text(json.dumps(result, default=str))
    skip = _device_reason(dry_run)
    if skip is not None:
        result["timing"] = f"skipped: {skip}"
        return result
    import torch

    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    result["gemm_baseline"] = _time_gemm(rows, flush)
    result["fp8"].update(_time_scaled_mm(flush))
    result["fp8"]["check"] = _time_fp8(fp8_rows, flush)
    (work / "hopper.json").write_text(json.dumps(result, default=str))
    torch.cuda.empty_cache()
    result["attention"] = _time_attention(flush)
    (work / "hopper.json").write_text(json.dumps(result, default=str))
    result["attention_sweep"] = device_hopper_attention.sweep(flush)
    return result


def _fp8_family() -> tuple[str | None, str]:
    """The family serving an e4m3 gemm on sm_90a, or None with the reason."""
    try:
        problem = GemmProblem(GEMM.m, GEMM.n, GEMM.k, dtype="e4m3")  # type: ignore[arg-type]
    except ValueError as exc:
        return None, f"ours skipped: no e4m3 GemmProblem yet ({exc})"
    family, reason = _family_and_reason(problem)
    return family, reason or "served"
