"""What a tuning trial's number comes from: the analytical `model` or the `measured` GPU time."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from autotune.cost_model import estimate
from templates.family import launch_params
from tessera_core.errors import IncorrectResultError, NoDeviceError
from tessera_core.hardware import ceil_div, native_arch
from tessera_core.types import (
    AttentionBackwardProblem,
    AttentionDecodeProblem,
    AttentionProblem,
    Problem,
    TileConfig,
)

ObjectiveKind = Literal["model", "measured"]
WARMUP_RUNS = 3
TIMED_RUNS = 10  # the minimum; the median of these is the trial's value


@dataclass(frozen=True)
class Evaluation:
    """One candidate's value and where it came from."""

    time_ms: float
    kind: ObjectiveKind
    detail: Mapping[str, Any] = field(default_factory=dict)


class Objective(Protocol):
    """Evaluates a compiled candidate; expected failures raise tessera_core.errors exceptions."""

    kind: ObjectiveKind

    def evaluate(self, problem: Problem, config: TileConfig, compiled: Any) -> Evaluation:
        """`compiled` is a generator.compile.CompiledKernel (the model reads `.resources`)."""
        ...


def _family(problem: Problem, arch: str) -> Any:
    """The family serving `problem` on `arch` (gemm_sm90 for an aligned gemm on sm_90a)."""
    from templates.registry import family_for

    return family_for(problem, arch)


def main_loop_counts(compiled: Any) -> dict[str, int] | None:
    """The SASS main-loop histogram of a compiled kernel, or None when SASS is unavailable.

    None (the cost model then uses its analytical instruction mix) when `compiled` carries no
    cubin or cuobjdump cannot disassemble it; counts are cached per cubin (generator.sass).
    """
    cubin = getattr(compiled, "cubin", None)
    if not isinstance(cubin, bytes) or not cubin:
        return None
    from generator.sass import kernel_and_loop_counts
    from tessera_core.errors import CudaError

    try:
        return kernel_and_loop_counts(cubin)[1] or None
    except CudaError:
        return None


def prefetch_main_loop_counts(outcomes: Sequence[Any], *, jobs: int) -> None:
    """Disassemble the new cubins among `outcomes` side by side, `jobs` cuobjdump processes at a
    time, so that main_loop_counts then finds each histogram cached (generator.sass keeps
    them by cubin hash). The histograms are the same as one at a time; only the wall time
    drops (disassembly, about a second a cubin, otherwise ran serially after the parallel
    compiles and doubled a tuning run).
    """
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    unique: dict[str, Any] = {}
    for outcome in outcomes:
        cubin = getattr(outcome, "cubin", None)
        if isinstance(cubin, bytes) and cubin:
            unique.setdefault(hashlib.sha256(cubin).hexdigest(), outcome)
    if len(unique) < 2 or jobs < 2:
        return  # nothing to overlap; main_loop_counts disassembles on demand
    with ThreadPoolExecutor(max_workers=min(jobs, len(unique))) as pool:
        list(pool.map(main_loop_counts, unique.values()))


class ModelObjective:
    """The cost model on the candidate's real ptxas resources and SASS mix: no GPU needed.

    `read_sass=False` skips disassembly (about a second a new cubin) and uses the model's
    analytical instruction mix instead. `prefetch` disassembles a compiled batch in parallel
    before its candidates are evaluated one by one.
    """

    kind: ObjectiveKind = "model"

    def __init__(self, *, arch: str, family: Any = None, read_sass: bool = True) -> None:
        self.arch = arch
        self._family = family
        self._read_sass = read_sass

    def prefetch(self, outcomes: Sequence[Any], *, jobs: int) -> None:
        if self._read_sass:
            prefetch_main_loop_counts(outcomes, jobs=jobs)

    def evaluate(self, problem: Problem, config: TileConfig, compiled: Any) -> Evaluation:
        family = self._family or _family(problem, self.arch)
        cost = estimate(
            problem,
            config,
            compiled.resources,
            dynamic_smem_bytes=family.smem_bytes(problem, config),
            arch=self.arch,
            loop_counts=main_loop_counts(compiled) if self._read_sass else None,
            family=getattr(family, "name", None),
        )
        return Evaluation(cost.time_ms, "model", cost.to_dict())


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """||got - want|| / ||want|| in float64 (Frobenius norm)."""
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got64 - want64) / max(np.linalg.norm(want64), 1e-30))


def _first_failure(
    problem: Problem, got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]
) -> tuple[str, float, float] | None:
    """(what, error, tolerance) of the first bound `got` breaks, else None.

    The bounds of generator.verify (Tolerance.of: normwise relative error, max abs error;
    LSE absolute): NaN (a poisoned, unwritten element) fails every bound, and an LSE of -inf
    where the reference has -inf (a row that sees no key) is exact.
    """
    from generator.verify import LSE_ABS_TOL, Tolerance, compare

    if isinstance(problem, AttentionBackwardProblem):
        passed, rel, _, reason = compare(problem, dict(got), dict(want))
        from generator.grad_check import GRAD_TOL_ULPS
        from generator.verify import UNIT_ROUNDOFF

        bound = GRAD_TOL_ULPS * UNIT_ROUNDOFF[problem.dtype]
        return None if passed else (f"gradients ({reason})", rel, bound)
    tolerance = Tolerance.of(problem.dtype)
    name = "o" if isinstance(problem, AttentionProblem) else "c"
    out, ref = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
    rel = relative_error(out, ref)
    if not rel <= tolerance.rel:
        return f"output {name} relative error", rel, tolerance.rel
    max_abs = float(np.max(np.abs(out - ref))) if out.size else 0.0
    max_abs_tol = tolerance.max_abs_factor * (float(np.max(np.abs(ref))) if ref.size else 0.0)
    if not max_abs <= max_abs_tol:
        return f"output {name} max abs error", max_abs, max_abs_tol
    if "lse" in want:
        lse, lse_ref = np.asarray(got["lse"], np.float64), np.asarray(want["lse"], np.float64)
        with np.errstate(invalid="ignore"):  # -inf - -inf
            lse_err = np.abs(lse - lse_ref)
        lse_err[np.isinf(lse_ref) & (lse == lse_ref)] = 0.0
        worst = float(np.max(lse_err)) if lse_err.size else 0.0  # NaN propagates
        if not worst <= LSE_ABS_TOL:
            return "output lse max abs error", worst, LSE_ABS_TOL
    return None


# Input names (as generator.verify.random_inputs draws them) whose Params field is named apart.
_PARAM_NAMES = {"do": "dout"}


def _accumulates_dq(problem: Problem, config: TileConfig) -> bool:
    """Whether the kernel adds into dQ with atomics (the backward, deterministic=0): the
    correctness run zeroes dQ first; timed runs keep adding (the time does not change)."""
    return isinstance(problem, AttentionBackwardProblem) and not config.option("deterministic", 0)


# Launches rotate over enough copies of the tensors to exceed the largest L2 here (H100, 50 MB)
# twice over, so a warm cache does not flatter the kernel (hardware.md's L2 column).
ROTATION_BYTES = 100 * 1024 * 1024
MAX_ROTATION_SETS = 16


def _output_shapes(problem: Problem) -> dict[str, tuple[tuple[int, ...], Any]]:
    from generator.emulator import NUMPY_DTYPES

    dtype = NUMPY_DTYPES[problem.dtype]
    if isinstance(problem, AttentionDecodeProblem):
        from generator.emulate_decode import output_shapes

        return dict(output_shapes(problem))
    if isinstance(problem, AttentionBackwardProblem):
        q_shape = (problem.batch, problem.heads, problem.seq_q, problem.head_dim)
        kv_shape = (problem.batch, problem.heads, problem.seq_kv, problem.head_dim)
        return {"dq": (q_shape, np.float32), "dk": (kv_shape, dtype), "dv": (kv_shape, dtype)}
    if isinstance(problem, AttentionProblem):
        rows = (problem.batch, problem.heads, problem.seq_q)
        return {"o": ((*rows, problem.head_dim), dtype), "lse": (rows, np.float32)}
    return {"c": ((problem.m, problem.n), NUMPY_DTYPES[problem.output_dtype])}


class MeasuredObjective:
    """Median CUDA-event kernel time on the GPU, after a once-per-candidate correctness check.

    CUDA-only and unverified on hardware here: written against generator.device (load,
    buffers, time_kernel with rotated Params); its logic is tested against a fake device
    (tests/autotune/test_measured_objective.py), the real path only by gpu-marked tests.
    Inputs, the float64 reference and the rotated buffer sets are made once per problem and
    reused by every candidate. The check uses generator.verify's bounds. A device fault
    (illegal address) is a LaunchError, but it leaves the CUDA context unusable: later
    candidates in the same process fail too.
    """

    kind: ObjectiveKind = "measured"

    def __init__(self, *, arch: str, family: Any = None, seed: int = 0) -> None:
        self.arch = arch
        self._family = family
        self._rng = np.random.default_rng(seed)
        self._problem: Problem | None = None
        self._buffers: list[dict[str, Any]] = []
        self._inputs: dict[str, np.ndarray] = {}
        self._want: dict[str, np.ndarray] = {}

    def _prepare(self, problem: Problem) -> None:
        from generator import device
        from generator.verify import random_inputs, reference

        if self._problem == problem:
            return
        self.close()
        self._inputs = random_inputs(problem, self._rng)
        self._want = reference(problem, self._inputs)
        outputs = _output_shapes(problem)
        sets = min(MAX_ROTATION_SETS, max(1, ceil_div(ROTATION_BYTES, problem.io_bytes())))
        for _ in range(sets):
            buffers: dict[str, Any] = {}
            self._buffers.append(buffers)  # before allocating: close() frees a partial set too
            for name, array in self._inputs.items():
                buffers[_PARAM_NAMES.get(name, name)] = device.to_device(array)
            for name, (shape, dtype) in outputs.items():
                buffers[name] = device.allocate(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._problem = problem

    def close(self) -> None:
        """Free the device buffers."""
        for buffers in self._buffers:
            for buffer in buffers.values():
                buffer.free()
        self._buffers, self._problem = [], None

    def _check(self, problem: Problem, config: TileConfig, kernel: Any, geometry: Any) -> None:
        from tessera_core.errors import LaunchError

        family = self._family or _family(problem, self.arch)
        buffers = self._buffers[0]
        outputs = _output_shapes(problem)
        for name, (_, dtype) in outputs.items():
            itemsize = np.dtype(dtype).itemsize
            buffers[name].poison(itemsize, "bfloat16" if problem.dtype == "bf16" else "float16")
        if _accumulates_dq(problem, config):
            buffers["dq"].zero()  # fp32 atomics add into it
        pointers = {name: buffer.ptr for name, buffer in buffers.items()}
        kernel.launch(launch_params(family, problem, pointers), geometry)
        try:
            kernel.device.sync()
        except Exception as exc:  # cuda.core's CUDAError: the kernel faulted on the device
            raise LaunchError(
                f"failed in the correctness run: {exc}; run it once under compute-sanitizer",
                kernel=getattr(kernel, "name", problem.family),
                grid=geometry.grid,
                block=geometry.block,
            ) from exc
        got = {name: buffers[name].download(*outputs[name]) for name in outputs}
        failure = _first_failure(problem, got, self._want)
        if failure is not None:
            what, error, tolerance = failure
            raise IncorrectResultError(
                f"{problem.family} {config} {what}", error=error, tolerance=tolerance
            )

    def evaluate(self, problem: Problem, config: TileConfig, compiled: Any) -> Evaluation:
        from generator import device

        family = self._family or _family(problem, self.arch)
        self._prepare(problem)
        geometry = family.launch_geometry(problem, config)
        kernel = device.load(
            compiled.cubin, compiled.kernel_name, geometry.smem_bytes, ptx=compiled.ptx
        )
        self._check(problem, config, kernel, geometry)
        params = [
            launch_params(family, problem, {n: b.ptr for n, b in buffers.items()})
            for buffers in self._buffers
        ]
        times_ms = device.time_kernel(
            kernel, params, geometry, warmup=WARMUP_RUNS, repetitions=TIMED_RUNS
        )
        return Evaluation(
            statistics.median(times_ms),
            "measured",
            {"runs": len(times_ms), "min_ms": min(times_ms), "max_ms": max(times_ms)},
        )


def _runs(device_arch: str | None, arch: str) -> bool:
    """Whether a device of `device_arch` runs `arch` natively (sm_90 runs sm_90 and sm_90a)."""
    return device_arch is not None and arch in (device_arch, native_arch(device_arch))


def choose_objective(arch: str) -> Objective:
    """Measured when a GPU of exactly `arch` is present, else the cost model."""
    from generator.gpu import probe

    gpu = probe()
    if gpu.available and _runs(gpu.arch, arch):
        return MeasuredObjective(arch=arch)
    return ModelObjective(arch=arch)


def require_gpu(arch: str) -> MeasuredObjective:
    """A measured objective, or NoDeviceError saying why none can be had."""
    from generator.gpu import probe

    gpu = probe()
    if not gpu.available or not _runs(gpu.arch, arch):
        raise NoDeviceError(
            f"measured tuning for {arch} needs a {arch} GPU; found: {gpu.arch or gpu.reason}. "
            "Tune with the cost model instead (the default without a GPU)."
        )
    return MeasuredObjective(arch=arch)
