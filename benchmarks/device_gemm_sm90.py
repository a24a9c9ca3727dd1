"""Device check of gemm_sm90 (TMA + wgmma) on a Hopper GPU: correctness against float64 and
TFLOP/s beside torch.matmul.

Two steps, so the GPU machine needs no NVRTC or CUDA headers:
  python benchmarks/device_gemm_sm90.py prepare DIR   # here: render + compile for sm_90a
  python benchmarks/device_gemm_sm90.py run DIR       # on the GPU: load, verify, time
`run` encodes the tensor maps with cuTensorMapEncodeTiled (tensor_map_encoding="driver"),
checks every prepared kernel at a ragged shape against float64 (C poisoned with NaN first) and
times the large-shape kernels with CUDA events (median of 20 after warm-up), then prints a table
and writes DIR/results.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RAGGED = (200, 136, 264)
LARGE = (8192, 8192, 8192)
LARGE_CONFIGS = [  # (block_m, block_n, num_warps, num_stages)
    (128, 128, 8, 5),
    (192, 128, 16, 4),
    (192, 128, 16, 5),
    (192, 192, 16, 3),
    (192, 192, 16, 4),
    (64, 192, 8, 5),
]


def prepare(out_dir: Path) -> None:
    from generator.compile import CompiledKernel, compile_many
    from generator.render import render
    from templates.registry import get_family
    from tessera_core.types import GemmProblem, TileConfig

    family = get_family("gemm_sm90")
    jobs: list[tuple[dict[str, Any], Any]] = []
    for dtype in ("fp16", "bf16"):
        ragged = GemmProblem(*RAGGED, dtype=dtype)
        configs = family.space.valid_configs(ragged, "sm_90a")
        if dtype == "bf16":
            configs = configs[:: max(1, len(configs) // 6)]
        for config in configs:
            rendered = render(family, ragged, config, specialized=False, arch="sm_90a")
            jobs.append(({"kind": "check", "problem": ragged.to_dict()}, rendered))
    for bm, bn, warps, stages in LARGE_CONFIGS:
        large = GemmProblem(*LARGE, dtype="bf16")
        config = TileConfig(block_m=bm, block_n=bn, block_k=64, num_warps=warps, num_stages=stages)
        if family.space.violations(config, large, "sm_90a"):
            continue
        rendered = render(family, large, config, specialized=False, arch="sm_90a")
        jobs.append(({"kind": "time", "problem": large.to_dict()}, rendered))
    compiled = compile_many([r for _, r in jobs], arch="sm_90a", executor="thread")
    entries = []
    for (meta, rendered), kernel in zip(jobs, compiled, strict=True):
        if not isinstance(kernel, CompiledKernel):
            raise kernel
        entries.append({
            **meta,
            "config": rendered.config.to_dict(),
            "kernel_name": rendered.kernel_name,
            "cubin": base64.b64encode(kernel.cubin).decode(),
            "registers": kernel.resources.registers,
        })  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(json.dumps(entries))
    print(f"prepared {len(entries)} kernels in {out_dir}")


def _inputs(problem: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import ml_dtypes

    dtype = np.float16 if problem.dtype == "fp16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((problem.m, problem.k)).astype(dtype)
    b = rng.standard_normal((problem.k, problem.n)).astype(dtype)
    return a, b


def run(out_dir: Path) -> int:
    from generator import device
    from templates.gemm_sm90.family import FAMILY as family
    from tessera_core.types import GemmProblem, TileConfig, problem_from_dict

    results = []
    failures = 0
    for entry in json.loads((out_dir / "manifest.json").read_text()):
        problem = problem_from_dict(entry["problem"])
        assert isinstance(problem, GemmProblem)
        config = TileConfig.from_dict(entry["config"])
        geometry = family.launch_geometry(problem, config)
        row: dict[str, Any] = {"kind": entry["kind"], "dtype": problem.dtype, **entry["config"]}
        try:
            kernel = device.load(
                base64.b64decode(entry["cubin"]), entry["kernel_name"], geometry.smem_bytes
            )
            a, b = _inputs(problem, seed=7)
            a_dev, b_dev = device.to_device(a), device.to_device(b)
            c_dev = device.allocate(problem.m * problem.n * 2)
            c_dev.poison(2, "float16" if problem.dtype == "fp16" else "bfloat16")
            pointers = {"a": a_dev.ptr, "b": b_dev.ptr, "c": c_dev.ptr}
            params = family.make_params(problem, pointers=pointers, tensor_map_encoding="driver")
            if entry["kind"] == "check":
                kernel.launch(params, geometry)
                c = c_dev.download((problem.m, problem.n), a.dtype).astype(np.float64)
                want = a.astype(np.float64) @ b.astype(np.float64)
                rel = float(np.linalg.norm(c - want) / np.linalg.norm(want))
                tol = 2e-3 if problem.dtype == "fp16" else 1.6e-2
                row.update(rel_error=rel, passed=bool(np.isfinite(rel) and rel < tol))
                failures += not row["passed"]
            else:
                times = device.time_kernel(kernel, [params], geometry, repetitions=20)
                ms = device.median_ms(times)
                row.update(ms=ms, tflops=problem.flops() / ms / 1e9)
            for buf in (a_dev, b_dev, c_dev):
                buf.free()
        except Exception as exc:  # report every kernel, not just the first failure
            row.update(error=f"{type(exc).__name__}: {exc}"[:300], passed=False)
            failures += 1
        print(json.dumps(row), flush=True)
        results.append(row)
    results.append(_torch_baseline())
    print(json.dumps(results[-1]), flush=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return 1 if failures else 0


def _torch_baseline() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"kind": "torch", "error": "no torch"}
    m, n, k = LARGE
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b)
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    ms = float(np.median(times))
    return {"kind": "torch.matmul", "dtype": "bf16", "ms": ms, "tflops": 2 * m * n * k / ms / 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "run"))
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.dir)
        return 0
    return run(args.dir)


if __name__ == "__main__":
    sys.exit(main())
