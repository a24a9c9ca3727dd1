"""The cache search path (one writable cache directory, then read-only layers in order) and
the cache limits, from the API arguments or the environment."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tessera_core import config
from tessera_core.errors import CacheConfigError


@dataclass(frozen=True, kw_only=True)
class SearchPath:
    """Where `KernelCache.get` looks: `writable` first (None: no writable cache), then `read_only`.

    Read-only layers (for example a pre-warmed cache shipped inside a model) are never
    written, quarantined or evicted.
    """

    writable: Path | None
    read_only: tuple[Path, ...] = ()

    def all(self) -> list[Path]:
        return ([self.writable] if self.writable is not None else []) + list(self.read_only)


def env_read_only_dirs() -> tuple[Path, ...]:
    """Read-only layers named by TESSERA_CACHE_PATH (separated by os.pathsep)."""
    raw = config.CACHE_PATH.get() or ""
    return tuple(Path(p).expanduser() for p in raw.split(os.pathsep) if p)


def search_path(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    read_only_dirs: Sequence[str | os.PathLike[str]] | None = None,
    writable: bool = True,
) -> SearchPath:
    """The search path from the API arguments, falling back to the environment knobs.

    Args:
        cache_dir: writable cache (default TESSERA_CACHE_DIR, else the XDG user cache dir).
        read_only_dirs: read-only layers (default TESSERA_CACHE_PATH).
        writable: False to search `cache_dir` read-only too (it is then the first layer).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else config.default_cache_dir()
    layers = (
        tuple(Path(p).expanduser() for p in read_only_dirs)
        if read_only_dirs is not None
        else env_read_only_dirs()
    )
    if not writable:
        return SearchPath(writable=None, read_only=(root, *layers))
    return SearchPath(writable=root, read_only=tuple(p for p in layers if p != root))


def env_limit(knob: config.Knob[int]) -> int | None:
    """A cache limit from its environment variable: a positive integer, else a one-line error."""
    try:
        value = knob.get()
    except ValueError as exc:
        raise CacheConfigError(f"{str(exc).rstrip('.')}; expected a positive integer") from None
    if value is not None and value <= 0:
        raise CacheConfigError(
            f"environment variable {knob.name}={value}: expected a positive integer "
            f"({knob.doc.rstrip('.')}); unset it for the default"
        )
    return value
