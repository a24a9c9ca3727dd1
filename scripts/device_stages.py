"""The device check's stages: each takes (work, out, dry_run) and returns a JSON-able result.

GPU stages use PyTorch on the same device for inputs, references and the baselines, and
launch our kernels on torch's current stream through generator.device (both share the
device's primary context), so a tensor's data_ptr() is a kernel argument as it is.
"""

from __future__ import annotations

import importlib.metadata
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import published
from tessera_core.types import AttentionProblem, GemmProblem, Problem, TileConfig

MAIN_SHAPE = AttentionProblem(8, 16, 2048, 2048, 64)
MAIN_TRIALS = 24
OTHER_TRIALS = 8
GEMM_SHAPES = (GemmProblem(4096, 4096, 4096), GemmProblem(8192, 8192, 8192))
RAGGED_GEMM = GemmProblem(1000, 1500, 700)
WARMUP_RUNS = 5
TIMED_RUNS = 25  # the minimum is 20; the median is reported
L2_FLUSH_BYTES = 256 * 1024 * 1024  # written between timed runs: more than any L2 here (60 MB)
# Partial configurations completed from each family's valid space (generator.inspect).
VERSIONED_PACKAGES = (
    *("cuda-core", "cuda-bindings", "cuda-pathfinder", "nvidia-cuda-nvrtc"),
    *("torch", "triton", "optuna", "platformdirs", "numpy"),
)
EXTRA_CONFIGS = (
    {"block_m": 128, "block_n": 128, "num_warps": 4},
    {"block_m": 64, "block_n": 64},
    {"num_warps": 8},
)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _arch(dry_run: bool) -> str:
    from generator.gpu import probe

    gpu = probe()
    return gpu.arch if gpu.available and gpu.arch and not dry_run else "sm_90"


def _compile(problem: Problem, config: TileConfig, arch: str) -> Any:
    from generator.compile import compile_kernel
    from generator.render import render
    from templates.registry import family_for

    return compile_kernel(render(family_for(problem, arch), problem, config, arch=arch), arch=arch)


def _nvrtc_library() -> str:
    """Which libnvrtc cuda.bindings loads (a wheel's, or the system CUDA's)."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return str(load_nvidia_dynamic_lib("nvrtc").abs_path)
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def stage_toolchain(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Versions of the driver, NVRTC, cuda-python and torch, and whether our cubin loads."""
    from generator import toolchain
    from generator.gpu import probe

    gpu = probe()
    result: dict[str, Any] = {
        "gpu": {"available": gpu.available, "arch": gpu.arch, "reason": gpu.reason},
        "nvrtc": toolchain.nvrtc_version(),
        "nvrtc_library": _nvrtc_library(),
        "packages": {name: _version(name) for name in VERSIONED_PACKAGES},
        "python": sys.version.split()[0],
    }
    try:
        from cuda.bindings import driver

        driver.cuInit(0)
        _, version = driver.cuDriverGetVersion()
        result["driver_cuda_version"] = f"{version // 1000}.{version % 1000 // 10}"
    except Exception as exc:  # no driver on this machine
        result["driver_cuda_version"] = f"unavailable ({type(exc).__name__})"
    try:
        import torch

        result["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            result["device_name"] = torch.cuda.get_device_name(0)
    except ImportError:
        result["torch_cuda"] = None
    if gpu.available and not dry_run:
        from generator import device
        from templates.registry import get_family

        family = get_family(MAIN_SHAPE.family)
        config = family.default_config(MAIN_SHAPE, gpu.arch or "sm_90")
        compiled = _compile(MAIN_SHAPE, config, gpu.arch or "sm_90")
        smem = family.launch_geometry(MAIN_SHAPE, config).smem_bytes
        try:
            device.load(compiled.cubin, compiled.kernel_name, smem)
            result["cubin_loads"] = f"yes: cubin from NVRTC {compiled.nvrtc_version}"
        except Exception as exc:
            device.load(compiled.cubin, compiled.kernel_name, smem, ptx=compiled.ptx)
            result["cubin_loads"] = f"no ({exc}); the PTX JIT-compiled by the driver loads"
    return result


def stage_compile(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Render and compile the default kernels of the check; resources and main-loop SASS."""
    from autotune.objective import main_loop_counts
    from templates.registry import get_family

    arch = _arch(dry_run)
    rows = []
    for problem in (MAIN_SHAPE, AttentionProblem(4, 16, 2048, 2048, 128), GEMM_SHAPES[0]):
        config = get_family(problem.family).default_config(problem, arch)
        start = time.perf_counter()
        compiled = _compile(problem, config, arch)
        loop = main_loop_counts(compiled) or {}
        rows.append(
            {
                "problem": f"{problem.family} {problem.shape_str()}",
                "config": str(config),
                "arch": arch,
                "resources": compiled.resources.to_dict(),
                "main_loop": {op: loop.get(op, 0) for op in ("HMMA", "LDSM", "BAR", "MUFU")},
                "main_loop_instructions": sum(loop.values()),
                "compile_s": round(time.perf_counter() - start, 2),
            }
        )
    return {"arch": arch, "kernels": rows}


def stage_gpu_tests(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """`pytest -m gpu tests benchmarks`; the log goes to gpu_tests.txt."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests", "benchmarks", "-q"]
    command += ["-p", "no:cacheprovider", "-p", "no:randomly", "--timeout", "60"]
    log = out / "gpu_tests.txt"
    with log.open("w") as sink:  # streamed: a stage cut short still leaves its log
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
    summary = (log.read_text().strip().splitlines() or [""])[-1]
    return {"exit": done.returncode, "summary": summary}


def _torch_stream() -> Any:
    import types

    import torch
    from cuda.bindings import driver

    return types.SimpleNamespace(handle=driver.CUstream(torch.cuda.current_stream().cuda_stream))


class OurKernel:
    """A compiled kernel bound to torch tensors: call it to launch on torch's stream."""

    def __init__(self, problem: Problem, config: TileConfig, arch: str, tensors: dict) -> None:
        from generator import device
        from templates.family import launch_params
        from templates.registry import family_for

        family = family_for(problem, arch)  # sm_90a: gemm_sm90 for an aligned gemm
        compiled = _compile(problem, config, arch)
        self.geometry = family.launch_geometry(problem, config)
        self.kernel = device.load(
            compiled.cubin, compiled.kernel_name, self.geometry.smem_bytes, ptx=compiled.ptx
        )
        pointers = {name: tensor.data_ptr() for name, tensor in tensors.items()}
        self.params = launch_params(family, problem, pointers)  # TMA maps by the driver
        self.stream = _torch_stream()

    def __call__(self) -> None:
        self.kernel.launch(self.params, self.geometry, self.stream)


def _attention_tensors(problem: AttentionProblem, seed: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    dtype = torch.float16 if problem.dtype == "fp16" else torch.bfloat16
    b, h, d = problem.batch, problem.heads, problem.head_dim
    return {
        "q": torch.randn(b, h, problem.seq_q, d, device="cuda", dtype=dtype),
        "k": torch.randn(b, h, problem.seq_kv, d, device="cuda", dtype=dtype),
        "v": torch.randn(b, h, problem.seq_kv, d, device="cuda", dtype=dtype),
        "o": torch.full((b, h, problem.seq_q, d), float("nan"), device="cuda", dtype=dtype),
        "lse": torch.full((b, h, problem.seq_q), float("nan"), device="cuda"),
    }


def _gemm_tensors(problem: GemmProblem, seed: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    dtype = torch.float16 if problem.dtype == "fp16" else torch.bfloat16
    return {
        "a": torch.randn(problem.m, problem.k, device="cuda", dtype=dtype),
        "b": torch.randn(problem.k, problem.n, device="cuda", dtype=dtype),
        "c": torch.full((problem.m, problem.n), float("nan"), device="cuda", dtype=dtype),
    }


def _check(problem: Problem, tensors: dict[str, Any]) -> dict[str, Any]:
    """Normwise relative error of our outputs against a float64 PyTorch reference on the GPU."""
    import torch

    from generator.verify import LSE_ABS_TOL, Tolerance

    tolerance = Tolerance.of(problem.dtype)
    if isinstance(problem, AttentionProblem):
        q, k, v = (tensors[n].double() for n in ("q", "k", "v"))
        scores = q @ k.transpose(-1, -2) / problem.head_dim**0.5
        if problem.causal:
            keep = torch.ones(problem.seq_q, problem.seq_kv, device="cuda", dtype=torch.bool)
            keep = keep.tril(diagonal=problem.seq_kv - problem.seq_q)
            scores = scores.masked_fill(~keep, float("-inf"))
        want, want_lse = torch.softmax(scores, -1) @ v, torch.logsumexp(scores, -1)
        got = tensors["o"].double()
        finite = torch.isfinite(want_lse)
        lse_err = (tensors["lse"].double() - want_lse)[finite].abs().max().item()
    else:
        want = tensors["a"].double() @ tensors["b"].double()
        got, lse_err = tensors["c"].double(), 0.0
    rel = ((got - want).norm() / want.norm()).item()
    passed = rel <= tolerance.rel and lse_err <= LSE_ABS_TOL  # NaN fails both
    return {"rel_err": rel, "lse_abs_err": lse_err, "tolerance": tolerance.rel, "passed": passed}


def default_and_completed(
    family: Any, problem: Problem, arch: str, partials: Sequence[Mapping[str, int]]
) -> list[TileConfig]:
    """`family`'s default for `problem`, then each partial config completed by
    generator.inspect; a partial that does not fit the problem is left out, duplicates too."""
    from generator.inspect import complete_config
    from tessera_core.errors import InvalidConfigError

    configs = [family.default_config(problem, arch)]
    for partial in partials:
        try:
            config, _ = complete_config(family, problem, arch, dict(partial))
        except InvalidConfigError:
            continue
        if config not in configs:
            configs.append(config)
    return configs


def _configs_to_check(problem: Problem, arch: str) -> list[TileConfig]:
    from templates.registry import get_family

    return default_and_completed(get_family(problem.family), problem, arch, EXTRA_CONFIGS)


def stage_correctness(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Default and several other configurations against PyTorch on the same device."""
    import torch

    arch = _arch(dry_run)
    problems: list[Problem] = [
        AttentionProblem(2, 8, 1024, 1024, d, dtype=dtype, causal=causal)  # type: ignore[arg-type]
        for d in (64, 128)
        for causal in (False, True)
        for dtype in ("fp16", "bf16")
    ]
    problems += [GEMM_SHAPES[0], RAGGED_GEMM]
    rows = []
    for problem in problems:
        for config in _configs_to_check(problem, arch):
            row: dict[str, Any] = {"problem": problem.shape_str(), "dtype": problem.dtype}
            row.update(causal=getattr(problem, "causal", False), config=str(config))
            try:
                tensors = (
                    _attention_tensors(problem, 0)
                    if isinstance(problem, AttentionProblem)
                    else _gemm_tensors(problem, 0)
                )
                OurKernel(problem, config, arch, tensors)()
                torch.cuda.synchronize()
                row.update(_check(problem, tensors))
            except Exception as exc:
                row.update(passed=False, error=f"{type(exc).__name__}: {exc}"[:300])
            rows.append(row)
            (work / "correctness.json").write_text(json.dumps({"rows": rows}))
    return {"rows": rows, "passed": sum(r["passed"] for r in rows), "total": len(rows)}


def _median_ms(fn: Any, flush: Any) -> float:
    import torch

    for _ in range(WARMUP_RUNS):
        fn()
    events = []
    for _ in range(TIMED_RUNS):
        flush.zero_()  # evict L2 outside the timed region
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def _tflops(problem: Problem, time_ms: float) -> float:
    return problem.flops() / (time_ms * 1e-3) / 1e12


def stage_model(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """The model's predicted TFLOP/s for the side-by-side shapes beside published figures."""
    tuned = {}
    tune_path = work / "tune.json"
    if tune_path.is_file():
        tuned = json.loads(tune_path.read_text()).get("tuned", {})
    arch = _arch(dry_run)
    predictions: dict[tuple[str, AttentionProblem], dict[str, float]] = {}
    rows = []
    for problem in published.shapes():
        values: dict[str, float] = {}
        values["fa2_tiles"] = published.model_tflops(
            problem, published.fa2_tile_config(problem.head_dim), arch
        )
        from device_tuning import tuned_config_for

        config, _ = tuned_config_for(problem, arch, tuned)
        values["tuned"] = published.compiled_model_tflops(problem, config, arch)
        predictions[(arch, problem)] = values
        rows.append({"problem": problem.to_dict(), "config": str(config), **values})
    return {
        "arch": arch,
        "config_source": "measured tuning" if tuned else "family default (no GPU tuning)",
        "rows": rows,
        "table": published.table_rows(predictions),
    }


def _default(problem: Problem, arch: str) -> TileConfig:
    from templates.registry import get_family

    return get_family(problem.family).default_config(problem, arch)
