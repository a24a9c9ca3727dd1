"""Compile rendered kernel sources with NVRTC into cubin, PTX and resources, via the compile cache.

NVRTC is called through cuda.bindings.nvrtc rather than cuda.core's Program: one NVRTC run
for a real arch (-arch=sm_90) yields both the cubin and the PTX (nvrtcGetCUBIN/nvrtcGetPTX),
while Program.compile("ptx") is a second full run and, on cuda.core 1.2, first asks the
driver whether it can load the PTX, which fails on a machine with no GPU driver.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from generator import toolchain
from generator.compile_cache import CompileCache, CompileRecord, compile_key
from generator.cubin_info import read_resources
from generator.resources import Resources
from tessera_core.cli import ignore_interrupts
from tessera_core.config import default_jobs
from tessera_core.errors import CompileError
from tessera_core.hardware import arch_spec

CXX_STANDARD = "c++17"
# -v makes ptxas report registers, shared memory, stack and spills into the program log.
# -default-device: NVRTC 13.0 (the lent GPUs' driver generation) treats an unannotated generic
# lambda inside a kernel (the GEMM's run_block) as a host function in JIT mode; 13.5 does not.
BASE_OPTIONS = (f"-std={CXX_STANDARD}", "-default-device", "--ptxas-options=-v")


class Compilable(Protocol):
    """What compile needs of a rendered kernel (generator.render.RenderedKernel fits)."""

    @property
    def source(self) -> str: ...

    @property
    def kernel_name(self) -> str: ...


@dataclass(frozen=True)
class CompiledKernel:
    """One kernel compiled for one arch: binaries, resources and how it was obtained.

    `compile_time_s` is the wall time of the call that produced this object: the NVRTC run
    on a miss, the cache lookup on a hit.
    """

    kernel_name: str
    cubin: bytes
    ptx: str
    resources: Resources
    log: str
    options: tuple[str, ...]
    arch: str
    nvrtc_version: str
    compile_time_s: float
    cache_hit: bool
    cache_key: str


def nvrtc_options(arch: str) -> tuple[str, ...]:
    """The NVRTC options for `arch`, include directories last (they stay out of cache keys)."""
    arch_spec(arch)  # ValueError naming the supported archs
    includes = tuple(f"-I{path}" for path in toolchain.include_dirs())
    return (f"-arch={arch}", *BASE_OPTIONS, *includes)


def _key_options(options: Sequence[str]) -> list[str]:
    return [opt for opt in options if not opt.startswith("-I")]


def _config_of(rendered: object) -> dict[str, Any] | None:
    config = getattr(rendered, "config", None)
    if config is None:
        return None
    described: dict[str, Any] = (
        config.to_dict() if hasattr(config, "to_dict") else {"config": str(config)}
    )
    family = getattr(rendered, "family", None)
    if family is not None:
        described["family"] = family if isinstance(family, str) else getattr(family, "name", "")
    problem = getattr(rendered, "problem", None)
    if problem is not None:
        described["problem"] = problem.to_dict() if hasattr(problem, "to_dict") else str(problem)
    return described


def _program_log(nvrtc: Any, program: Any) -> str:
    size = toolchain.check(nvrtc.nvrtcGetProgramLogSize(program), call="nvrtcGetProgramLogSize")
    buffer = b" " * size
    toolchain.check(nvrtc.nvrtcGetProgramLog(program, buffer), call="nvrtcGetProgramLog")
    return buffer.rstrip(b"\x00").decode(errors="replace")


def run_nvrtc(
    source: str,
    *,
    kernel_name: str,
    arch: str,
    options: Sequence[str],
    config: Mapping[str, Any] | None = None,
) -> CompileRecord:
    """One NVRTC run: cubin, PTX and the log; CompileError carries log, options and config."""
    from cuda.bindings import nvrtc

    encoded = [opt.encode() for opt in options]
    program = toolchain.check(
        nvrtc.nvrtcCreateProgram(source.encode(), f"{kernel_name}.cu".encode(), 0, [], []),
        call="nvrtcCreateProgram",
    )
    try:
        start = time.perf_counter()
        status = nvrtc.nvrtcCompileProgram(program, len(encoded), encoded)
        seconds = time.perf_counter() - start
        log = _program_log(nvrtc, program)
        toolchain.check(
            status,
            call=f"NVRTC compile of {kernel_name} for {arch}",
            hint="see the compiler log below; fix the template or drop this configuration",
            error=lambda message: CompileError(message, log=log, options=options, config=config),
        )
        cubin_size = toolchain.check(nvrtc.nvrtcGetCUBINSize(program), call="nvrtcGetCUBINSize")
        cubin = b" " * cubin_size
        toolchain.check(nvrtc.nvrtcGetCUBIN(program, cubin), call="nvrtcGetCUBIN")
        ptx_size = toolchain.check(nvrtc.nvrtcGetPTXSize(program), call="nvrtcGetPTXSize")
        ptx = b" " * ptx_size
        toolchain.check(nvrtc.nvrtcGetPTX(program, ptx), call="nvrtcGetPTX")
    finally:
        toolchain.check(nvrtc.nvrtcDestroyProgram(program), call="nvrtcDestroyProgram")
    return CompileRecord(
        cubin=cubin,
        ptx=ptx.rstrip(b"\x00").decode(),
        log=log,
        options=tuple(options),
        arch=arch,
        nvrtc_version=toolchain.nvrtc_version(),
        compile_time_s=seconds,
    )


def _key(source: str, arch: str, options: Sequence[str]) -> str:
    return compile_key(
        source=source,
        arch=arch,
        options=_key_options(options),
        nvrtc_version=toolchain.nvrtc_version(),
        headers_digest=toolchain.headers_digest(),
    )


def _headline(error: CompileError) -> str:
    return str(error.args[0]).split("\n", 1)[0] if error.args else "NVRTC compile failed"


def _failure_record(error: CompileError, *, arch: str, seconds: float) -> CompileRecord:
    return CompileRecord(
        cubin=b"",
        ptx="",
        log=error.log,
        options=tuple(error.options),
        arch=arch,
        nvrtc_version=toolchain.nvrtc_version(),
        compile_time_s=seconds,
        error=_headline(error),
    )


def _compiled(
    record: CompileRecord,
    *,
    kernel_name: str,
    key: str,
    hit: bool,
    seconds: float,
    config: Mapping[str, Any] | None = None,
) -> CompiledKernel:
    """The CompiledKernel of a record; a recorded failure raises its CompileError again."""
    if record.error is not None:
        raise CompileError(
            f"{record.error} (cached failure)",
            log=record.log,
            options=record.options,
            config=config,
        )
    return CompiledKernel(
        kernel_name=kernel_name,
        cubin=record.cubin,
        ptx=record.ptx,
        resources=read_resources(record.log, record.cubin, kernel_name),
        log=record.log,
        options=record.options,
        arch=record.arch,
        nvrtc_version=record.nvrtc_version,
        compile_time_s=seconds,
        cache_hit=hit,
        cache_key=key,
    )


def compile_source(
    source: str,
    *,
    kernel_name: str,
    arch: str | None = None,
    config: Mapping[str, Any] | None = None,
    cache: CompileCache | None = None,
) -> CompiledKernel:
    """Compile `source` (entry point `kernel_name`) for `arch`, from the cache when possible."""
    start = time.perf_counter()
    arch = arch or toolchain.default_arch()
    options = nvrtc_options(arch)
    cache = cache if cache is not None else CompileCache()
    key = _key(source, arch, options)
    record = cache.get(key)
    if record is not None:
        seconds = time.perf_counter() - start
        return _compiled(
            record, kernel_name=kernel_name, key=key, hit=True, seconds=seconds, config=config
        )
    try:
        record = run_nvrtc(
            source, kernel_name=kernel_name, arch=arch, options=options, config=config
        )
    except CompileError as exc:
        cache.put(key, _failure_record(exc, arch=arch, seconds=time.perf_counter() - start))
        raise
    cache.put(key, record)
    seconds = time.perf_counter() - start
    return _compiled(record, kernel_name=kernel_name, key=key, hit=False, seconds=seconds)


def compile_kernel(
    rendered: Compilable, *, arch: str | None = None, cache: CompileCache | None = None
) -> CompiledKernel:
    """Compile a rendered kernel for `arch` (default: toolchain.default_arch()).

    Raises:
        CompileError: NVRTC rejected the source; carries the log, options and configuration.
    """
    return compile_source(
        rendered.source,
        kernel_name=rendered.kernel_name,
        arch=arch,
        config=_config_of(rendered),
        cache=cache,
    )


@dataclass(frozen=True)
class _Job:
    source: str
    kernel_name: str
    arch: str
    config: dict[str, Any] | None
    cache_root: str


@dataclass(frozen=True)
class _Failure:
    """A CompileError flattened for the trip back from a worker process.

    CompileError's keyword-only constructor does not survive pickling, so workers return
    its parts and the parent rebuilds it.
    """

    message: str
    log: str
    options: tuple[str, ...]
    config: dict[str, Any] | None


def _run_job(job: _Job) -> CompiledKernel | _Failure:
    try:
        return compile_source(
            job.source,
            kernel_name=job.kernel_name,
            arch=job.arch,
            config=job.config,
            cache=CompileCache(root=job.cache_root),
        )
    except CompileError as exc:
        return _Failure(_headline(exc), exc.log, tuple(exc.options), exc.config)


def _executor(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers)
    # spawn, not fork: the parent may hold a CUDA context or threads (Optuna, tqdm), which a
    # forked child must not inherit.
    # Ctrl-C reaches the whole process group: the parent reports it, workers stay quiet.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=ignore_interrupts,
    )


# A tuner compiles in many small batches; spawning workers for each would cost ~0.3 s a worker
# a batch, so pools live for the process (shut down at exit) and are shared by all callers.
_pools: dict[tuple[str, int], Executor] = {}
_pools_lock = threading.Lock()


def _shared_executor(kind: str, workers: int) -> Executor:
    with _pools_lock:
        pool = _pools.get((kind, workers))
        if pool is None:
            pool = _pools[(kind, workers)] = _executor(kind, workers)
            atexit.register(pool.shutdown, wait=False, cancel_futures=True)
        return pool


def _discard_executor(kind: str, workers: int, pool: Executor) -> None:
    """Forget a pool whose worker died (BrokenProcessPool): the next batch starts a fresh one."""
    with _pools_lock:
        if _pools.get((kind, workers)) is pool:
            del _pools[(kind, workers)]
    pool.shutdown(wait=False, cancel_futures=True)


def compile_many(
    rendereds: Sequence[Compilable],
    *,
    arch: str | None = None,
    jobs: int | None = None,
    cache: CompileCache | None = None,
    executor: Literal["process", "thread"] = "process",
) -> list[CompiledKernel | CompileError]:
    """Compile many kernels in parallel; results in input order, failures returned as CompileError.

    Cache hits are served in this process; identical sources compile once. Misses go to
    `jobs` workers (default: TESSERA_JOBS, else all cores). nvrtcCompileProgram releases the
    GIL (2 threads ran 6 small kernels 1.9x faster than 1 on 2 cores), so `executor="thread"`
    scales without spawning workers; processes stay the default because NVRTC's
    documentation does not promise concurrent compiles in one process are safe, and a crash
    in one worker then cannot take the tuner down. Workers are spawned once per process and
    reused by every later batch (the main job's 48 cold candidates: 15.8 s -> 10.2 s).
    """
    arch = arch or toolchain.default_arch()
    cache = cache if cache is not None else CompileCache()
    workers = max(1, jobs if jobs is not None else default_jobs())
    options = nvrtc_options(arch)
    results: list[CompiledKernel | CompileError | None] = [None] * len(rendereds)
    pending: dict[str, list[int]] = {}
    jobs_by_key: dict[str, _Job] = {}
    for index, rendered in enumerate(rendereds):
        start = time.perf_counter()
        key = _key(rendered.source, arch, options)
        record = cache.get(key)
        if record is not None:
            seconds = time.perf_counter() - start
            try:
                results[index] = _compiled(
                    record,
                    kernel_name=rendered.kernel_name,
                    key=key,
                    hit=True,
                    seconds=seconds,
                    config=_config_of(rendered),
                )
            except CompileError as exc:
                results[index] = exc
            continue
        pending.setdefault(key, []).append(index)
        jobs_by_key.setdefault(
            key,
            _Job(
                rendered.source, rendered.kernel_name, arch, _config_of(rendered), str(cache.root)
            ),
        )
    keys = list(jobs_by_key)
    if len(keys) <= 1 or workers == 1:
        outcomes = [_run_job(jobs_by_key[key]) for key in keys]
    else:
        size = workers  # one pool per size: a short batch leaves workers idle, not respawned
        pool = _shared_executor(executor, size)
        try:
            outcomes = list(pool.map(_run_job, [jobs_by_key[key] for key in keys]))
        except BrokenExecutor:
            _discard_executor(executor, size, pool)
            raise
    for key, outcome in zip(keys, outcomes, strict=True):
        for index in pending[key]:
            results[index] = _as_result(outcome)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def _as_result(outcome: CompiledKernel | _Failure) -> CompiledKernel | CompileError:
    if isinstance(outcome, _Failure):
        return CompileError(
            outcome.message, log=outcome.log, options=outcome.options, config=outcome.config
        )
    return outcome
