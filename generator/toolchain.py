"""The CUDA toolchain found by cuda.pathfinder: headers, NVRTC, binary tools, status checks."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera_core import config
from tessera_core.errors import CudaError
from tessera_core.hardware import ARCHS, DEFAULT_ARCH, native_arch

# Headers NVRTC reads from the CUDA runtime include directory; their contents go into the
# compile-cache key so a different toolkit's fp16/bf16 headers never reuse a stale binary.
CUDA_HEADERS_USED = ("cuda_fp16.h", "cuda_fp16.hpp", "cuda_bf16.h", "cuda_bf16.hpp")
HEADER_SUFFIXES = (".cuh", ".h", ".hpp")


def check(
    result: tuple[Any, ...] | Any,
    *,
    call: str,
    hint: str = "",
    error: Callable[[str], Exception] | None = None,
) -> Any:
    """The one checker of cuda-python statuses (NVRTC and driver); returns the call's values.

    cuda-python returns `(status, *values)`. A status other than success raises
    `error(message)` when given (compile.py turns NVRTC failures into CompileError that way),
    else CudaError naming the call, the status and `hint` (what to do next).
    Returns None, the single value, or a tuple of values.
    """
    parts = result if isinstance(result, tuple) else (result,)
    status, values = parts[0], parts[1:]
    if int(status) != 0:  # NVRTC_SUCCESS and CUDA_SUCCESS are both 0
        name = getattr(status, "name", str(status))
        message = f"{call} failed with {name}" + (f"; {hint}" if hint else "")
        raise error(message) if error is not None else CudaError(message)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _templates_include_dir() -> Path:
    import templates

    return Path(templates.__file__).resolve().parent / "include"


@functools.cache
def cuda_include_dir() -> str:
    """The CUDA runtime headers (cuda_fp16.h, cuda_bf16.h) NVRTC needs, found by cuda.pathfinder."""
    from cuda import pathfinder

    found = pathfinder.find_nvidia_header_directory("cudart")
    if found is None:
        raise CudaError(
            "CUDA runtime headers (cuda_fp16.h) not found by cuda.pathfinder; "
            "pip install nvidia-cuda-runtime or set CUDA_HOME to a CUDA toolkit"
        )
    return str(found)


def include_dirs() -> tuple[str, ...]:
    """Include directories for NVRTC: Tessera's intrinsics header, then the CUDA runtime headers."""
    return (str(_templates_include_dir()), cuda_include_dir())


@functools.cache
def headers_digest() -> str:
    """SHA-256 over the contents of every header a kernel may include (not their paths)."""
    digest = hashlib.sha256()
    tessera_dir = _templates_include_dir()
    for path in sorted(tessera_dir.rglob("*")):
        if path.is_file() and path.suffix in HEADER_SUFFIXES:
            digest.update(str(path.relative_to(tessera_dir)).encode())
            digest.update(path.read_bytes())
    cuda_dir = Path(cuda_include_dir())
    for name in CUDA_HEADERS_USED:
        path = cuda_dir / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def nvrtc_version() -> str:
    """NVRTC's version as 'major.minor', e.g. '13.5'."""
    from cuda.bindings import nvrtc

    major, minor = check(
        nvrtc.nvrtcVersion(),
        call="nvrtcVersion",
        hint="pip install nvidia-cuda-nvrtc matching cuda-bindings",
    )
    return f"{major}.{minor}"


def supported_archs() -> tuple[str, ...]:
    return tuple(sorted(ARCHS))


def default_arch() -> str:
    """The present GPU's native target (clamped to a supported arch; sm_90a on an sm_90 device),
    else TESSERA_ARCH, else sm_90."""
    from generator.gpu import probe

    gpu = probe()
    if gpu.available and gpu.arch is not None:
        clamped = clamp_arch(gpu.arch)
        # An sm_90 device runs sm_90a cubins; a newer one clamped to sm_90 does not.
        return native_arch(clamped) if clamped == gpu.arch else clamped
    knob = config.ARCH.get()
    if knob:
        if knob not in ARCHS:
            raise ValueError(
                f"{config.ARCH.name}={knob!r} is not supported; "
                f"expected one of {', '.join(supported_archs())}"
            )
        return knob
    return DEFAULT_ARCH


def clamp_arch(arch: str) -> str:
    """The newest supported arch not newer than `arch` (sm_100 -> sm_90, sm_87 -> sm_86)."""
    if arch in ARCHS:
        return arch
    number = int(arch.removeprefix("sm_").rstrip("af"))
    # Arch-specific variants (sm_90a) are chosen explicitly, never by clamping.
    older = [a for a in ARCHS if not a.endswith("a") and int(a.removeprefix("sm_")) <= number]
    if not older:
        raise ValueError(
            f"GPU arch {arch} is older than every supported arch ({', '.join(supported_archs())})"
        )
    return max(older, key=lambda a: int(a.removeprefix("sm_")))


def _binary_utility(name: str) -> str:
    from cuda import pathfinder

    found = pathfinder.find_nvidia_binary_utility(name)
    if found is None:
        raise CudaError(
            f"{name} not found by cuda.pathfinder; pip install nvidia-cuda-{name} "
            "or put a CUDA toolkit's bin directory on PATH"
        )
    return str(found)


@functools.cache
def cuobjdump_path() -> str:
    return _binary_utility("cuobjdump")


@functools.cache
def nvdisasm_path() -> str:
    """cuobjdump -sass runs nvdisasm; it must be on the subprocess's PATH."""
    return _binary_utility("nvdisasm")
