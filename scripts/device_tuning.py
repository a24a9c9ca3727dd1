"""The device check's measured stages: tuning (with measured records) and side-by-side timings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from device_stages import (
    GEMM_SHAPES,
    L2_FLUSH_BYTES,
    MAIN_SHAPE,
    MAIN_TRIALS,
    OTHER_TRIALS,
    OurKernel,
    _arch,
    _attention_tensors,
    _compile,
    _default,
    _gemm_tensors,
    _median_ms,
    _tflops,
)

from benchmarks import published
from tessera_core.types import AttentionProblem, Problem, TileConfig

TUNE_STAGE_S = 80  # stop starting new tuning runs after this (the stage's budget is 100 s)
MAIN_TIMEOUT_S = 75
GEMM_TRIALS, GEMM_TIMEOUT_S = 12, 20
OTHER_TIMEOUT_S = 8


def _records_of(result: Any, arch: str, out: Path) -> tuple[list[float], list[float]]:
    """Append the tuning run's measured trials to measured_records.jsonl; (model, measured)."""
    from autotune.calibrate import measured_record
    from autotune.objective import ModelObjective, main_loop_counts
    from templates.registry import get_family

    problem = result.problem
    family = get_family(problem.family)
    model, measured = [], []
    with (out / "measured_records.jsonl").open("a") as sink:
        for record in result.records:
            if record.status != "ok" or record.value_ms is None:
                continue
            config = TileConfig.from_dict(record.config)
            compiled = _compile(problem, config, arch)  # a compile-cache hit
            loop = main_loop_counts(compiled)
            line = measured_record(
                problem,
                config,
                arch=arch,
                time_ms=record.value_ms,
                resources=compiled.resources,
                dynamic_smem_bytes=family.smem_bytes(problem, config),
                loop_counts=loop,
            )
            sink.write(json.dumps(line, sort_keys=True) + "\n")
            model.append(ModelObjective(arch=arch).evaluate(problem, config, compiled).time_ms)
            measured.append(record.value_ms)
    return model, measured


def stage_tune(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Measured tuning: the main shape (>= 24 trials), GEMM 4096^3, then the timing shapes."""
    from autotune.calibrate import fit, load_records, spearman
    from autotune.objective import MeasuredObjective
    from autotune.search import tune

    start = time.monotonic()
    arch = _arch(dry_run)
    result: dict[str, Any] = {"arch": arch, "tuned": {}}

    def save() -> None:
        (work / "tune.json").write_text(json.dumps(result, default=str))

    plan: list[tuple[Problem, int, float]] = [
        (MAIN_SHAPE, MAIN_TRIALS, MAIN_TIMEOUT_S),
        (GEMM_SHAPES[0], GEMM_TRIALS, GEMM_TIMEOUT_S),
    ]
    # Only seq 2048: a measured trial checks against a float64 NumPy reference, which at seq
    # 8192 costs minutes; the 8192 shapes run with their 2048 class's tiles (tuned_config_for).
    plan += [
        (p, OTHER_TRIALS, OTHER_TIMEOUT_S)
        for p in published.shapes()
        if p.seq_q == MAIN_SHAPE.seq_q and p != MAIN_SHAPE
    ]
    for problem, trials, timeout_s in plan:
        if time.monotonic() - start > TUNE_STAGE_S:
            break
        objective = MeasuredObjective(arch=arch)
        try:
            run = tune(
                problem,
                arch=arch,
                trials=trials,
                timeout_s=timeout_s,
                objective=objective,
                progress=False,
            )
        except Exception as exc:
            result.setdefault("errors", []).append(f"{problem.shape_str()}: {exc}"[:300])
            continue
        finally:
            objective.close()
        model, measured = _records_of(run, arch, out)
        entry = {
            "config": run.best_config.to_dict(),
            "time_ms": run.best_time_ms,
            "tflops": _tflops(problem, run.best_time_ms),
            "trials": run.trials_run,
            "valid": run.n_valid,
            "spearman_model_vs_measured": spearman(model, measured) if len(model) > 2 else None,
        }
        result["tuned"][problem.kernel_key(arch)] = entry
        if problem == MAIN_SHAPE:
            result["main"] = {**entry, "model_ms": model, "measured_ms": measured}
        save()
    records_path = out / "measured_records.jsonl"
    if records_path.is_file():
        try:
            result["calibration"] = [f.to_dict() for f in fit(load_records([records_path]))]
        except ValueError as exc:
            result["calibration"] = str(exc)
    return result


def tuned_config_for(problem: Problem, arch: str, tuned: dict[str, Any]) -> tuple[TileConfig, str]:
    """The measured-tuned tiles of `problem`'s class (tuned at seq 2048 / 4096^3), else default."""
    if isinstance(problem, AttentionProblem):
        p = problem
        tuning_shape: Problem = AttentionProblem(8, 16, 2048, 2048, p.head_dim, causal=p.causal)
    else:
        tuning_shape = GEMM_SHAPES[0]
    entry = tuned.get(problem.kernel_key(arch)) or tuned.get(tuning_shape.kernel_key(arch))
    if entry is not None:
        source = "measured tuning" + ("" if tuning_shape == problem else " at seq 2048 / 4096^3")
        return TileConfig.from_dict(entry["config"]), source
    return _default(problem, arch), "default (not tuned)"


def _sdpa(problem: AttentionProblem, tensors: dict[str, Any], backend_name: str) -> Any:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)
    q, k, v = tensors["q"], tensors["k"], tensors["v"]

    def call() -> None:
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v, is_causal=problem.causal)

    call()  # raises here when the backend cannot run this shape on this device
    return call


def _matmul(a: Any, b: Any) -> Any:
    import torch

    def call() -> None:
        torch.matmul(a, b)

    return call


def stage_timings(*, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Tuned kernels vs SDPA (flash, cuDNN) and torch.matmul, CUDA events, L2 flushed."""
    import torch

    arch = _arch(dry_run)
    tuned: dict[str, Any] = {}
    if (work / "tune.json").is_file():
        tuned = json.loads((work / "tune.json").read_text()).get("tuned", {})
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    rows: list[dict[str, Any]] = []

    for problem in [*published.shapes(), *GEMM_SHAPES]:
        config, source = tuned_config_for(problem, arch, tuned)
        row: dict[str, Any] = {"problem": problem.shape_str(), "config": str(config)}
        row.update(causal=getattr(problem, "causal", False), config_source=source)
        try:
            if isinstance(problem, AttentionProblem):
                tensors = _attention_tensors(problem, 1)
                baselines = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION"}
            else:
                tensors = _gemm_tensors(problem, 1)
                baselines = {"torch_matmul": ""}
            ours = OurKernel(problem, config, arch, tensors)
            row["ours_tflops"] = _tflops(problem, _median_ms(ours, flush))
            for name, backend in baselines.items():
                try:
                    fn = (
                        _sdpa(problem, tensors, backend)  # type: ignore[arg-type]
                        if backend
                        else _matmul(tensors["a"], tensors["b"])
                    )
                    row[f"{name}_tflops"] = _tflops(problem, _median_ms(fn, flush))
                except Exception as exc:
                    row[f"{name}_tflops"] = None
                    row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:200]
            del tensors
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        (work / "timings.json").write_text(json.dumps({"rows": rows}, default=str))
        torch.cuda.empty_cache()
    return {"rows": rows, "runs": {"warmup": 5, "timed": 25, "statistic": "median"}}
