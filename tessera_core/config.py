"""Every environment knob of Tessera Autotune, declared once; nothing else reads os.environ."""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import platformdirs

from tessera_core.errors import KnobError
from tessera_core.hardware import ARCHS

T = TypeVar("T")


@dataclass(frozen=True)
class Knob(Generic[T]):
    """One environment variable: its name, type, default and a one-line doc.

    `minimum` bounds a numeric knob (numbers must also be finite); `choices` lists the values
    a string knob accepts (case-insensitively; `get` returns the listed spelling).
    """

    name: str
    type: type[T]
    default: T | None
    doc: str
    minimum: float | None = None
    choices: tuple[str, ...] | None = None

    def expected(self) -> str:
        """The accepted form, as an error message and the README's table say it."""
        if self.choices is not None:
            return f"one of {', '.join(self.choices)}"
        if self.type is bool:
            return "1/true/yes/on or 0/false/no/off"
        noun = {int: "an integer", float: "a finite number"}.get(self.type, "a string")
        return noun if self.minimum is None else f"{noun} >= {self.minimum:g}"

    def get(self) -> T | None:
        """The variable's value (the default when unset or empty).

        Raises:
            KnobError: a malformed value; names the variable, the value and the expected form.
        """
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        if self.type is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")  # type: ignore[return-value]
        if self.choices is not None:
            for choice in self.choices:
                if raw.strip().lower() == choice.lower():
                    return choice  # type: ignore[return-value]
            raise self._error(raw)
        try:
            value = self.type(raw)  # type: ignore[call-arg]
        except (ValueError, OverflowError):
            raise self._error(raw) from None
        if isinstance(value, (int, float)) and not (
            math.isfinite(value) and (self.minimum is None or value >= self.minimum)
        ):
            raise self._error(raw)
        return value

    def _error(self, raw: str) -> KnobError:
        return KnobError(
            f"environment variable {self.name}={raw!r}: expected {self.expected()}; "
            f"fix it or unset it ({self.name}: {self.doc})"
        )


CACHE_DIR: Knob[str] = Knob(
    "TESSERA_CACHE_DIR",
    str,
    None,
    "Writable kernel cache directory (default: the user's XDG cache dir + /tessera/kernels).",
)
CACHE_PATH: Knob[str] = Knob(
    "TESSERA_CACHE_PATH",
    str,
    None,
    "Extra read-only cache layers searched after the writable one, separated by ':'.",
)
CACHE_MAX_BYTES: Knob[int] = Knob(
    "TESSERA_CACHE_MAX_BYTES",
    int,
    2 * 1024**3,
    "LRU limit on the writable kernel cache's total size in bytes.",
    minimum=1,
)
COMPILE_CACHE_DIR: Knob[str] = Knob(
    "TESSERA_COMPILE_CACHE_DIR",
    str,
    None,
    "Content-addressed NVRTC and host-build cache (default: XDG cache dir + /tessera/compile).",
)
ARCH: Knob[str] = Knob(
    "TESSERA_ARCH",
    str,
    None,
    "Target arch such as sm_80 or sm_90 (default: the present GPU's, else sm_90).",
    choices=tuple(sorted(ARCHS)),
)
JOBS: Knob[int] = Knob(
    "TESSERA_JOBS", int, None, "Parallel compile workers (default: all cores).", minimum=1
)
CXX: Knob[str] = Knob("TESSERA_CXX", str, "g++", "Host C++ compiler (C++20) used by the emulator.")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL: Knob[str] = Knob(
    "TESSERA_LOG_LEVEL",
    str,
    "WARNING",
    "Python logging level of the tessera loggers.",
    choices=LOG_LEVELS,
)

CACHE_MAX_ENTRIES: Knob[int] = Knob(
    "TESSERA_CACHE_MAX_ENTRIES",
    int,
    None,
    "Optional LRU limit on the number of entries in the writable kernel cache (default: none).",
    minimum=1,
)
CACHE_WRITE_DELAY_S: Knob[float] = Knob(
    "TESSERA_CACHE_WRITE_DELAY_S",
    float,
    0.0,
    "Test hook: seconds a cache put sleeps between writing payloads (to kill a writer mid-put).",
    minimum=0,
)
TUNING_SPACES_DIR: Knob[str] = Knob(
    "TESSERA_TUNING_SPACES_DIR",
    str,
    None,
    "Directory of recorded Kernel Tuner spaces for `python -m autotune.replay`.",
)
RANK: Knob[int] = Knob(
    "TESSERA_RANK",
    int,
    None,
    "This process's rank in a multi-process job, recorded in runtime traces "
    "(default: RANK, else LOCAL_RANK, as torchrun sets them).",
    minimum=0,
)
TORCH_RANK: Knob[int] = Knob(
    "RANK", int, None, "Global rank set by torchrun / torch.distributed.", minimum=0
)
TORCH_LOCAL_RANK: Knob[int] = Knob(
    "LOCAL_RANK", int, None, "Rank on this machine set by torchrun / torch.distributed.", minimum=0
)

KNOBS: tuple[Knob, ...] = (
    CACHE_DIR,
    CACHE_PATH,
    CACHE_MAX_BYTES,
    COMPILE_CACHE_DIR,
    ARCH,
    JOBS,
    CXX,
    LOG_LEVEL,
    CACHE_MAX_ENTRIES,
    CACHE_WRITE_DELAY_S,
    TUNING_SPACES_DIR,
    RANK,
    TORCH_RANK,
    TORCH_LOCAL_RANK,
)


def user_cache_root() -> Path:
    """The per-user cache root (XDG on Linux) under which Tessera keeps its directories."""
    return Path(platformdirs.user_cache_dir("tessera"))


def default_cache_dir() -> Path:
    return Path(CACHE_DIR.get() or user_cache_root() / "kernels")


def default_compile_cache_dir() -> Path:
    return Path(COMPILE_CACHE_DIR.get() or user_cache_root() / "compile")


def default_jobs() -> int:
    return JOBS.get() or os.cpu_count() or 1


def process_rank() -> int | None:
    """This process's rank in a multi-process job: TESSERA_RANK, else RANK, else LOCAL_RANK."""
    for knob in (RANK, TORCH_RANK, TORCH_LOCAL_RANK):
        rank = knob.get()
        if rank is not None:
            return rank
    return None


def knobs_markdown_table() -> str:
    """The README's table of knobs, generated from KNOBS."""
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for knob in KNOBS:
        default = "" if knob.default is None else f"`{knob.default}`"
        rows.append(f"| `{knob.name}` | {knob.type.__name__} | {default} | {knob.doc} |")
    return "\n".join(rows)


def child_environment(*, prepend_path: str | None = None) -> dict[str, str]:
    """A copy of this process' environment for a subprocess, optionally with a PATH entry first."""
    env = dict(os.environ)
    if prepend_path is not None:
        env["PATH"] = prepend_path + os.pathsep + env.get("PATH", "")
    return env


def check_knobs() -> None:
    """Read every knob once, so a malformed variable fails up front (KnobError), not mid-run."""
    for knob in KNOBS:
        knob.get()


def configure_logging() -> None:
    """Route the `tessera.*` loggers to stderr at TESSERA_LOG_LEVEL (called by every CLI)."""
    level = LOG_LEVEL.get() or "WARNING"
    logger = logging.getLogger("tessera")
    logger.setLevel(level)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at each record, not the one it was made with (which a
    test's capture, or a redirect, may since have closed)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass
