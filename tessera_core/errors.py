"""The one exception hierarchy of Tessera Autotune; every message says what to do next."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _bullets(lines: Sequence[str]) -> str:
    return "".join(f"\n  - {line}" for line in lines)


class TesseraError(Exception):
    """Base class of every error this project raises on purpose."""


class KnobError(TesseraError, ValueError):
    """A TESSERA_* environment variable holds a value of the wrong form; fix or unset it."""


class UsageError(TesseraError, ValueError):
    """A command-line argument parses but cannot be used (an unsupported shape, an unwritable
    directory, an unreadable input file); CLIs report it as one line with exit status 2."""


class InvalidConfigError(TesseraError, ValueError):
    """A tile configuration breaks a rule of its kernel family for a given problem."""

    def __init__(self, message: str, *, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.config = dict(config) if config is not None else None


class CompileError(TesseraError):
    """NVRTC (or the host C++ compiler) rejected a rendered kernel source."""

    def __init__(
        self,
        message: str,
        *,
        log: str,
        options: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.log = log
        self.options = list(options)
        self.config = dict(config) if config is not None else None
        super().__init__(
            f"{message}\n  config: {self.config}\n  options: {' '.join(self.options)}\n"
            f"  compiler log:\n{log.rstrip()}"
        )


class OutOfResourcesError(TesseraError):
    """A kernel needs more of a resource (registers, shared memory, threads) than allowed."""

    def __init__(self, *, resource: str, need: int, limit: int, arch: str) -> None:
        self.resource = resource
        self.need = need
        self.limit = limit
        self.arch = arch
        super().__init__(
            f"{resource}: needs {need}, limit on {arch} is {limit}; "
            "pick a smaller tile, fewer stages or fewer warps"
        )


class LaunchError(TesseraError):
    """A kernel launch failed on the device or in the host emulator."""

    def __init__(
        self, message: str, *, kernel: str, grid: Sequence[int], block: Sequence[int]
    ) -> None:
        self.kernel = kernel
        self.grid = tuple(grid)
        self.block = tuple(block)
        super().__init__(f"{kernel} grid={self.grid} block={self.block}: {message}")


class CudaError(TesseraError):
    """A CUDA driver or runtime call returned an error status."""


class NoDeviceError(TesseraError):
    """A CUDA GPU was required but none is usable; use device='emulator' or 'cpu' instead."""


class CacheMissError(TesseraError, KeyError):
    """No usable cache entry for a kernel_key in any searched cache directory."""

    def __init__(
        self, kernel_key: str, searched: Sequence[str], reasons: Sequence[str] = ()
    ) -> None:
        self.kernel_key = kernel_key
        self.searched = list(searched)
        self.reasons = list(reasons)
        detail = _bullets(self.reasons)
        super().__init__(
            f"no cached kernel for {kernel_key!r}; searched: {', '.join(self.searched) or '(none)'}"
            f"{detail}\n  run `python -m generator.tune` for this problem to build it"
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class EmulatorError(TesseraError):
    """The host emulator detected a fault in a kernel (divergent barrier, bad address, ...)."""


class InvalidCacheKeyError(TesseraError, ValueError):
    """A kernel_key cannot name a cache entry (empty, too long, or not [A-Za-z0-9._-])."""


class CacheCorruptError(TesseraError):
    """A cache entry failed an integrity check (checksum, size or metadata); it is never loaded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"{path}: {reason}; the entry is treated as a miss, "
            "run `python -m cache verify` to remove bad entries"
        )


class CacheConfigError(TesseraError, ValueError):
    """A cache setting (an environment variable such as TESSERA_CACHE_MAX_BYTES) is unusable."""


class CacheLockError(TesseraError):
    """A cache lock could not be taken in time (another live process holds it)."""


class BundleError(TesseraError):
    """A kernel cache bundle was refused; nothing was written."""

    def __init__(self, bundle: str, problems: Sequence[str]) -> None:
        self.bundle = bundle
        self.problems = list(problems)
        detail = _bullets(self.problems)
        super().__init__(
            f"bundle {bundle} refused, nothing was imported:{detail}\n"
            "  re-export it with `python -m cache export` from a trusted cache"
        )


class NoValidConfigError(TesseraError):
    """Tuning found no candidate that compiled, fit the arch and ran correctly."""

    def __init__(self, problem: str, reasons: Sequence[str]) -> None:
        self.problem = problem
        self.reasons = list(reasons)
        detail = _bullets(self.reasons)
        super().__init__(
            f"no valid tile configuration for {problem}; every candidate failed:{detail}\n"
            "  widen the family's space, give more --trials, or check the compiler log above"
        )


class IncorrectResultError(TesseraError):
    """A candidate kernel's output differs from the family's float64 reference."""

    def __init__(self, kernel: str, *, error: float, tolerance: float) -> None:
        self.kernel = kernel
        self.error = error
        self.tolerance = tolerance
        super().__init__(
            f"{kernel}: relative error {error:.3g} > tolerance {tolerance:.3g} against the "
            "reference; the configuration is rejected (report the template bug)"
        )
