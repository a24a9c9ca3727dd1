"""The in-process memo of loaded entries, revalidated by an lstat per hit.

A memo hit must never serve what another process has since replaced or evicted: each memo
entry keeps the identity of the file it was read from (inode, device, size, mtime) and the
entry paths of the layers searched before it. A hit lstats them (a microsecond, no read):
if the file is another one now, or gone, or an earlier layer gained the key, the memo entry
is dropped and the caller reads the disk again.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cache.entry import CacheEntry

Identity = tuple[int, int, int, int]


def identity(st: os.stat_result, *, mtime_ns: int | None = None) -> Identity:
    """Which file this is: inode, device, size and mtime (`mtime_ns` if we just set it)."""
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns if mtime_ns is None else mtime_ns)


@dataclass(kw_only=True)
class _Memoized:
    entry: CacheEntry
    path: Path
    identity: Identity
    earlier: tuple[Path, ...]  # the key's paths in the layers searched before this one
    touched_s: float  # monotonic time of this process's last touch


class Memo:
    """key -> the entry loaded from disk, served while its file is still that file."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._items: dict[str, _Memoized] = {}

    def remember(
        self, entry: CacheEntry, *, path: Path, identity: Identity, earlier: tuple[Path, ...]
    ) -> None:
        """Keep `entry`, read from the file at `path` that had `identity`."""
        if self.enabled:
            self._items[entry.kernel_key] = _Memoized(
                entry=entry,
                path=path,
                identity=identity,
                earlier=earlier,
                touched_s=time.monotonic(),
            )

    def get(self, kernel_key: str, *, touch_interval_s: float) -> CacheEntry | None:
        """The memoized entry if its file is unchanged; records a use if one is due."""
        item = self._items.get(kernel_key)
        if item is None:
            return None
        try:
            current = identity(os.lstat(item.path))
        except OSError:
            current = None
        if current != item.identity or any(os.path.lexists(p) for p in item.earlier):
            del self._items[kernel_key]
            return None
        if not item.entry.read_only and time.monotonic() - item.touched_s > touch_interval_s:
            item.touched_s = time.monotonic()
            touched_ns = touch(item.path)
            if touched_ns is not None:
                item.identity = (*item.identity[:3], touched_ns)
        return item.entry

    def drop(self, kernel_key: str) -> None:
        self._items.pop(kernel_key, None)

    def clear(self) -> None:
        self._items.clear()


def touch(path: Path) -> int | None:
    """Record a use: the entry file's mtime is its last-use time (contents untouched).

    Returns the mtime set (ns), or None if the file is gone or cannot be written. A symlink
    put there meanwhile is touched itself, never what it points to.
    """
    now_ns = time.time_ns()
    with contextlib.suppress(OSError):  # evicted or replaced meanwhile, or read-only fs
        os.utime(path, ns=(now_ns, now_ns), follow_symlinks=False)
        return now_ns
    return None
