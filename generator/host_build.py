"""The host build: a kernel source compiled by the system C++ compiler into a loadable library."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tessera_core import config
from tessera_core.errors import CompileError, EmulatorError, LaunchError

INCLUDE_DIR = Path(__file__).resolve().parent.parent / "templates" / "include"
HOST_HEADER_DIR = INCLUDE_DIR / "tessera"
# The emulator is a test vehicle and at test shapes the compiler dominates. Attention 1x2x128x64
# (benchmarks/bench_emulator.py): -O0 builds in 0.27 s and runs in 20 ms; -O1 0.54 s / 11 ms;
# -O2 0.77 s / 10 ms. The emulator's own hot code (fragments, f16/bf16) is always -O2 through a
# pragma in its headers. Larger problems amortise a higher level (opt_level=).
DEFAULT_OPT_LEVEL = 0
HOST_FLAGS: tuple[str, ...] = (
    "-std=c++20",
    "-fPIC",
    "-shared",
    "-fno-strict-aliasing",
    "-fvisibility=hidden",
    "-fno-gnu-unique",
    "-DTESSERA_HOST_EMULATION",
)
ERROR_BUFFER_BYTES = 4096
HOST_CACHE_FORMAT = 1

_loaded: dict[str, ctypes.CDLL] = {}
_loaded_lock = threading.Lock()
# A launch installs process-wide SIGSEGV/SIGBUS handlers (host/fault.h): one launch at a time.
_launch_lock = threading.Lock()


@functools.cache
def compiler_version(cxx: str) -> str:
    """The first line of `cxx --version`; part of every host-build cache key."""
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CompileError(
            f"host C++ compiler {cxx!r} is not usable; install g++ >= 12 or set TESSERA_CXX",
            log=str(exc),
        ) from exc
    return out.stdout.splitlines()[0] if out.stdout else cxx


def host_header_digest() -> str:
    """Hash of every header the host build can include (the intrinsics contract, both halves)."""
    digest = hashlib.sha256()
    for path in sorted(HOST_HEADER_DIR.rglob("*")):
        if path.is_file() and path.suffix in (".h", ".cuh"):
            digest.update(str(path.relative_to(HOST_HEADER_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def host_build_key(source: str, *, cxx: str, flags: Sequence[str]) -> str:
    """Content address of a host build: source, host headers, compiler version, flags, format."""
    digest = hashlib.sha256()
    for part in (
        source,
        host_header_digest(),
        compiler_version(cxx),
        " ".join(flags),
        str(HOST_CACHE_FORMAT),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Schedule:
    """How the emulator orders a block's work (host::MODE_* in host/scheduler.h).

    The default (late copies, warp 0 first) catches a tile read before its cp.async wait or
    before the barrier after it; eager copies catch a stage refilled before every warp read it;
    reversed warps catch a lower warp writing what a higher warp reads without a barrier.
    """

    eager_copies: bool = False
    reverse_warps: bool = False

    @property
    def mode(self) -> int:
        return (1 if self.eager_copies else 0) | (2 if self.reverse_warps else 0)

    def __str__(self) -> str:
        copies = "eager" if self.eager_copies else "late"
        warps = "reverse" if self.reverse_warps else "forward"
        return f"{copies}-copies/{warps}-warps"


# Every kernel check runs under both: between them, each barrier of a cp.async pipeline is needed.
SCHEDULES: tuple[Schedule, ...] = (Schedule(), Schedule(eager_copies=True, reverse_warps=True))


@dataclass(frozen=True)
class HostLibrary:
    """A built and loaded host library and where it came from."""

    path: Path
    key: str
    compile_time_s: float
    cache_hit: bool
    lib: ctypes.CDLL

    def kernel(self, kernel_name: str) -> HostKernel:
        try:
            fn = getattr(self.lib, f"tessera_launch_{kernel_name}")
        except AttributeError:
            raise EmulatorError(
                f"{self.path} exports no tessera_launch_{kernel_name}; does the source end with "
                f"TESSERA_EXPORT({kernel_name}, Params)?"
            ) from None
        fn.restype = ctypes.c_int
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint64),
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        audit = self.lib.tessera_set_atomic_audit
        audit.restype = ctypes.c_int
        audit.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint64),
            ctypes.POINTER(ctypes.c_void_p),
        ]
        return HostKernel(name=kernel_name, fn=fn, set_atomic_audit=audit)


@dataclass(frozen=True)
class HostKernel:
    """One exported launcher: runs the kernel over a grid on the CPU."""

    name: str
    fn: ctypes._CFuncPtr  # type: ignore[name-defined]
    set_atomic_audit: ctypes._CFuncPtr  # type: ignore[name-defined]

    def launch(
        self,
        params: ctypes.Structure,
        *,
        grid: Sequence[int],
        block: Sequence[int],
        smem_bytes: int,
        schedule: Schedule | None = None,
        regions: Sequence[tuple[int, int]] = (),
        atomic_counts: Sequence[tuple[int, np.ndarray]] = (),
    ) -> None:
        """Run every block; raises EmulatorError with the emulator's diagnosis on a fault.

        `regions` are the (address, nbytes) of the launch's tensors: when given, a cp.async
        reading outside all of them is an error (an illegal address on a GPU).
        `atomic_counts` pairs the address of each fp32 or int32 accumulator with a zeroed
        uint32 array of one counter per element, which atomic_add_f32 / atomic_add_i32
        increment (host/atomic_audit.h).
        """
        mode = (schedule or Schedule()).mode
        bounds = [edge for address, nbytes in regions for edge in (address, address + nbytes)]
        region_array = (ctypes.c_uint64 * max(1, len(bounds)))(*bounds)
        err = ctypes.create_string_buffer(ERROR_BUFFER_BYTES)
        ranges = [
            edge
            for address, counts in atomic_counts
            for edge in (address, address + 4 * counts.size)
        ]
        range_array = (ctypes.c_uint64 * max(1, len(ranges)))(*ranges)
        count_array = (ctypes.c_void_p * max(1, len(atomic_counts)))(
            *(_uint32_pointer(counts) for _, counts in atomic_counts)
        )
        with _launch_lock:
            if self.set_atomic_audit(len(atomic_counts), range_array, count_array) != 0:
                raise ValueError(f"atomic_counts: at most 4 accumulators, got {len(atomic_counts)}")
            try:
                status = self._run(
                    params, grid, block, smem_bytes, mode, region_array, regions, err
                )
            finally:
                self.set_atomic_audit(0, range_array, count_array)
        if status != 0:
            message = err.value.decode(errors="replace")
            if "declared for at most" in message:
                raise LaunchError(message, kernel=self.name, grid=grid, block=block)
            raise EmulatorError(f"{message} (grid={tuple(grid)}, block={tuple(block)})")

    def _run(
        self,
        params: ctypes.Structure,
        grid: Sequence[int],
        block: Sequence[int],
        smem_bytes: int,
        mode: int,
        region_array: ctypes.Array[ctypes.c_uint64],
        regions: Sequence[tuple[int, int]],
        err: ctypes.Array[ctypes.c_char],
    ) -> int:
        grid3 = (ctypes.c_uint * 3)(*_dim3(grid))
        block3 = (ctypes.c_uint * 3)(*_dim3(block))
        return int(
            self.fn(
                ctypes.byref(params),
                grid3,
                block3,
                smem_bytes,
                mode,
                region_array,
                len(regions),
                err,
                ERROR_BUFFER_BYTES,
            )
        )


def _uint32_pointer(counts: np.ndarray) -> int:
    if counts.dtype != np.uint32 or not counts.flags.c_contiguous:
        raise ValueError(f"atomic counts: expected a contiguous uint32 array, got {counts.dtype}")
    return int(counts.ctypes.data)


def _dim3(dims: Sequence[int]) -> tuple[int, int, int]:
    padded = (*tuple(int(d) for d in dims), 1, 1, 1)[:3]
    return padded[0], padded[1], padded[2]


def build_host_library(
    source: str, *, opt_level: int = DEFAULT_OPT_LEVEL, cache_dir: Path | None = None
) -> HostLibrary:
    """Compile `source` for the host (or reuse the build of the same content) and load it.

    Raises:
        CompileError: the host compiler rejected the source; carries its log and flags.
    """
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level={opt_level}: must be 0, 1, 2 or 3 (g++ -O level)")
    cxx = config.CXX.get() or "g++"
    flags = (*HOST_FLAGS, f"-O{opt_level}")
    key = host_build_key(source, cxx=cxx, flags=flags)
    with _loaded_lock:
        lib = _loaded.get(key)
    root = (cache_dir or config.default_compile_cache_dir()) / "host"
    path = root / key[:2] / f"{key}.so"
    if lib is not None:
        return HostLibrary(path=path, key=key, compile_time_s=0.0, cache_hit=True, lib=lib)
    cache_hit = path.exists()
    compile_time_s = 0.0
    if not cache_hit:
        compile_time_s = _compile(source, path, cxx=cxx, flags=flags)
    lib = ctypes.CDLL(str(path))
    with _loaded_lock:
        _loaded.setdefault(key, lib)
    return HostLibrary(
        path=path, key=key, compile_time_s=compile_time_s, cache_hit=cache_hit, lib=lib
    )


def _compile(source: str, path: Path, *, cxx: str, flags: Sequence[str]) -> float:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Private temporaries, then an atomic rename: parallel test processes never see a partial .so.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        src = Path(tmp) / "kernel.cpp"
        src.write_text(source)
        out = Path(tmp) / "kernel.so"
        cmd = [cxx, *flags, f"-I{INCLUDE_DIR}", "-x", "c++", str(src), "-o", str(out)]
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise CompileError(
                "host build failed: the kernel source does not compile for the emulator",
                log=result.stderr or result.stdout,
                options=cmd,
            )
        os.replace(out, path)
    return elapsed


def array_pointer(array: np.ndarray) -> int:
    """Address of a C-contiguous array's first element (what a Params pointer field takes)."""
    if not array.flags.c_contiguous:
        raise ValueError("kernel arguments must be C-contiguous arrays")
    return int(array.ctypes.data)
