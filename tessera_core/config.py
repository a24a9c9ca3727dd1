"""Every environment knob of Tessera Autotune, declared once; nothing else reads os.environ."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import platformdirs

T = TypeVar("T")


@dataclass(frozen=True)
class Knob(Generic[T]):
    """One environment variable: its name, type, default and a one-line doc."""

    name: str
    type: type[T]
    default: T | None
    doc: str

    def get(self) -> T | None:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        try:
            if self.type is bool:
                return raw.strip().lower() in ("1", "true", "yes", "on")  # type: ignore[return-value]
            return self.type(raw)  # type: ignore[call-arg]
        except ValueError as exc:
            raise ValueError(
                f"environment variable {self.name}={raw!r} is not a valid {self.type.__name__}: "
                f"{self.doc}"
            ) from exc


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
)
JOBS: Knob[int] = Knob("TESSERA_JOBS", int, None, "Parallel compile workers (default: all cores).")
CXX: Knob[str] = Knob("TESSERA_CXX", str, "g++", "Host C++ compiler (C++20) used by the emulator.")
LOG_LEVEL: Knob[str] = Knob(
    "TESSERA_LOG_LEVEL", str, "WARNING", "Python logging level of the tessera loggers."
)

CACHE_MAX_ENTRIES: Knob[int] = Knob(
    "TESSERA_CACHE_MAX_ENTRIES",
    int,
    None,
    "Optional LRU limit on the number of entries in the writable kernel cache (default: none).",
)
CACHE_WRITE_DELAY_S: Knob[float] = Knob(
    "TESSERA_CACHE_WRITE_DELAY_S",
    float,
    0.0,
    "Test hook: seconds a cache put sleeps between writing payloads (to kill a writer mid-put).",
)
TUNING_SPACES_DIR: Knob[str] = Knob(
    "TESSERA_TUNING_SPACES_DIR",
    str,
    None,
    "Directory of recorded Kernel Tuner spaces for `python -m autotune.replay`.",
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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging() -> None:
    """Route the `tessera.*` loggers to stderr at TESSERA_LOG_LEVEL (called by every CLI)."""
    level = str(LOG_LEVEL.get() or "WARNING").upper()
    if level not in LOG_LEVELS:
        raise ValueError(
            f"environment variable {LOG_LEVEL.name}={level!r}: expected one of "
            f"{', '.join(LOG_LEVELS)}"
        )
    logger = logging.getLogger("tessera")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
