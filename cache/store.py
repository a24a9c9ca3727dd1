"""KernelCache: the multi-process safe, LRU-bounded, layered store of tuned kernels.

Concurrency argument (code in cache/publish.py and cache/lock.py, layout in cache/layout.py):

- Publish: a put writes the whole entry (header, metadata, cubin, PTX) to a temp file in the
  same filesystem, fsyncs it, then renames it over `entries/<key>.kernel` and fsyncs the
  directory. rename(2) is atomic, so a reader opens either the old file or the new one,
  never a mix, and a writer killed at any point leaves at most an orphan temp file that no
  reader ever looks at and the next eviction removes. A bundle import stages every entry
  first and renames them all under one hold of the index lock, or none.
- Readers take no lock: they read the entry file whole into memory (a bounded, non-blocking
  read of a regular file only: cache/entry_file.py) and verify every checksum before
  returning. If eviction unlinks the file meanwhile, the open descriptor
  still reads the complete old inode (POSIX unlink semantics), so eviction never removes an
  entry "while it is being read": the reader already holds all of it.
- Renames into entries/, eviction and quarantine all run under `locks/index.lock`, so an
  eviction decision can never delete an entry published after it scanned: a completed put
  is only ever removed by a later eviction that saw it, or by a later put of the same key.
- Single-flight builds hold `locks/keys/<key>.lock` while building. All locks are OS flocks,
  released by the kernel when the holder dies (SIGKILL included); a writer's temp file is
  flocked too, so eviction knows an orphan by being able to lock it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cache import eviction
from cache.entry import CacheEntry, KernelPayload, encode_entry
from cache.inventory import BadEntry, EntryInfo, list_entries, read_checked, verify_layers
from cache.layers import env_limit, search_path
from cache.layout import Layout, check_key
from cache.lock import hold, try_hold
from cache.memo import Identity, Memo, identity, touch
from cache.publish import discard_locked, publish, publish_staged, staging_dir
from cache.validity import serve
from tessera_core import config
from tessera_core.errors import CacheMissError, TesseraError

log = logging.getLogger("tessera.cache")

DEFAULT_TOUCH_INTERVAL_S = 60.0
DEFAULT_WAIT_TIMEOUT_S = 600.0


class KernelCache:
    """The kernel cache: one writable directory plus read-only layers, searched in order."""

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        read_only_dirs: Sequence[str | os.PathLike[str]] | None = None,
        writable: bool = True,
        max_bytes: int | None = None,
        max_entries: int | None = None,
        touch_interval_s: float = DEFAULT_TOUCH_INTERVAL_S,
        memo: bool = True,
    ) -> None:
        """Args:
        cache_dir: the writable cache (default TESSERA_CACHE_DIR, else XDG user cache).
        read_only_dirs: read-only layers searched after it (default TESSERA_CACHE_PATH).
        writable: False to open `cache_dir` read-only (never written nor evicted).
        max_bytes: LRU byte limit (default TESSERA_CACHE_MAX_BYTES, 2 GiB).
        max_entries: optional LRU entry limit (default TESSERA_CACHE_MAX_ENTRIES, none).
        touch_interval_s: last-use times are written at most this often per entry and
            process, so a hot load is not a disk write; LRU order is exact to this grain.
        memo: keep loaded entries in memory; a later get in this process is a dict lookup.
        """
        path = search_path(cache_dir=cache_dir, read_only_dirs=read_only_dirs, writable=writable)
        self.search_path = path
        self.max_bytes = max_bytes if max_bytes is not None else env_limit(config.CACHE_MAX_BYTES)
        self.max_entries = (
            max_entries if max_entries is not None else env_limit(config.CACHE_MAX_ENTRIES)
        )
        self.touch_interval_s = touch_interval_s
        self._writable = Layout(root=path.writable) if path.writable is not None else None
        self._layers: list[tuple[Layout, bool]] = []
        if self._writable is not None:
            self._layers.append((self._writable, False))
        self._layers += [(Layout(root=p), True) for p in path.read_only]
        self._memo = Memo(enabled=memo)

    # ----------------------------------------------------------------------------- reads

    def get(
        self,
        kernel_key: str,
        *,
        arch: str | None = None,
        template_hash: str | None = None,
        nvrtc_version: str | None = None,
    ) -> CacheEntry | None:
        """The first valid entry for `kernel_key` in the search path, else None.

        Args:
            arch: the device's arch (sm_XY); entries it cannot run are skipped, and an
                entry whose cubin does not fit but whose PTX does comes back `use_ptx=True`.
            template_hash: skip entries built from another template source.
            nvrtc_version: skip entries built by another NVRTC (exact match).
        """
        return self.lookup(
            kernel_key, arch=arch, template_hash=template_hash, nvrtc_version=nvrtc_version
        )[0]

    def require(
        self,
        kernel_key: str,
        *,
        arch: str | None = None,
        template_hash: str | None = None,
        nvrtc_version: str | None = None,
    ) -> CacheEntry:
        """Like `get`, but raise CacheMissError naming every layer searched and why it missed."""
        entry, reasons = self.lookup(
            kernel_key, arch=arch, template_hash=template_hash, nvrtc_version=nvrtc_version
        )
        if entry is None:
            raise CacheMissError(kernel_key, [str(p) for p in self.search_path.all()], reasons)
        return entry

    def lookup(
        self,
        kernel_key: str,
        *,
        arch: str | None = None,
        template_hash: str | None = None,
        nvrtc_version: str | None = None,
    ) -> tuple[CacheEntry | None, list[str]]:
        """(entry or None, the reasons each entry found was not served)."""
        check_key(kernel_key)
        memoized = self._memo.get(kernel_key, touch_interval_s=self.touch_interval_s)
        if memoized is not None:
            served, _ = serve(
                memoized, arch=arch, template_hash=template_hash, nvrtc_version=nvrtc_version
            )
            if served is not None:
                return served, []
        reasons: list[str] = []
        for i, (layout, read_only) in enumerate(self._layers):
            entry, reason, file_identity = self._load(layout, kernel_key, read_only=read_only)
            if entry is None or file_identity is None:
                if reason:
                    reasons.append(reason)
                continue
            served, reason = serve(
                entry, arch=arch, template_hash=template_hash, nvrtc_version=nvrtc_version
            )
            if served is None:
                reasons.append(f"{layout.entry_path(kernel_key)}: {reason}")
                continue
            earlier = tuple(lay.entry_path(kernel_key) for lay, _ in self._layers[:i])
            self._memo.remember(
                entry, path=layout.entry_path(kernel_key), identity=file_identity, earlier=earlier
            )
            return served, reasons
        return None, reasons

    def _load(
        self, layout: Layout, kernel_key: str, *, read_only: bool
    ) -> tuple[CacheEntry | None, str | None, Identity | None]:
        """Read and verify one layer's entry: (entry, None, identity of the file read for the
        memo) or (None, why it is no hit or None if absent, None)."""
        path = layout.entry_path(kernel_key)
        try:
            read = read_checked(layout, kernel_key, read_only=read_only)
        except OSError as exc:
            return None, f"{path}: unreadable: {exc}", None
        if read is None:
            return None, None, None
        if read.problem is not None or read.metadata is None:
            return None, f"{path}: corrupt: {read.problem}", None
        touched_ns = None
        if not read_only and time.time() - read.stat.st_mtime > self.touch_interval_s:
            touched_ns = touch(path)
        entry = CacheEntry(
            kernel_key=kernel_key,
            metadata=read.metadata,
            cubin=read.cubin,
            ptx=read.ptx,
            layer=layout.root,
            read_only=read_only,
            size_bytes=len(read.blob),
        )
        return entry, None, identity(read.stat, mtime_ns=touched_ns)

    def read_entry_file(self, kernel_key: str) -> tuple[bytes, Path, dict[str, Any]] | None:
        """The verified bytes of the first good entry file for `kernel_key`, its layer and its
        metadata (bundles); bad ones are skipped (and quarantined in the writable layer)."""
        check_key(kernel_key)
        for layout, read_only in self._layers:
            try:
                read = read_checked(layout, kernel_key, read_only=read_only)
            except OSError as exc:
                log.warning("skipping unreadable entry %s: %s", layout.entry_path(kernel_key), exc)
                continue
            if read is None or read.problem is not None or read.metadata is None:
                continue
            return read.blob, layout.root, read.metadata
        return None

    def list_keys(self, *, writable_only: bool = False) -> list[str]:
        """Every key present in any layer (or only the writable one), sorted, no duplicates."""
        layers = [(lay, ro) for lay, ro in self._layers if not (writable_only and ro)]
        return sorted({key for layout, _ in layers for key in layout.entry_keys()})

    def entries(self) -> list[EntryInfo]:
        """Every entry file of every layer with its metadata (payloads not read)."""
        return list_entries(self._layers)

    def forget(self) -> None:
        """Drop this process's memo: the next get reads from disk."""
        self._memo.clear()

    # ---------------------------------------------------------------------------- writes

    def _require_writable(self) -> Layout:
        if self._writable is None:
            raise TesseraError(
                "this KernelCache has no writable directory; "
                "open it with writable=True and a cache_dir you can write"
            )
        return self._writable

    def put(
        self,
        kernel_key: str,
        *,
        cubin: bytes | None,
        ptx: str | None,
        metadata: Mapping[str, Any],
    ) -> CacheEntry:
        """Store (or replace) the entry of `kernel_key` atomically; evict LRU entries if over.

        Returns the entry as stored (metadata with kernel_key, format_version, created_at and
        the payload checksums added).
        """
        layout = self._require_writable()
        check_key(kernel_key)
        head, cubin_bytes, ptx_bytes, stored = encode_entry(
            kernel_key, cubin=cubin, ptx=ptx, metadata=metadata
        )
        self._memo.drop(kernel_key)
        publish(
            layout,
            kernel_key,
            (head, cubin_bytes, ptx_bytes),
            under_index_lock=lambda: self._evict_locked(
                layout,
                max_bytes=self.max_bytes,
                max_entries=self.max_entries,
                protect=frozenset([kernel_key]),  # a put never evicts itself
            ),
        )
        entry = CacheEntry(
            kernel_key=kernel_key,
            metadata=stored,
            cubin=cubin_bytes if cubin is not None else None,
            ptx=ptx,
            layer=layout.root,
            read_only=False,
            size_bytes=len(head) + len(cubin_bytes) + len(ptx_bytes),
        )
        return entry

    @contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A private directory in this cache's tmp/ for `publish_staged`, removed after."""
        with staging_dir(self._require_writable()) as path:
            yield path

    def publish_staged(self, staged: Mapping[str, Path], *, replace: bool) -> list[str]:
        """Publish verified entry files staged in this cache's tmp/ (bundle import): all of
        them or, on any error, none (see `cache.publish.publish_staged`). Keys present are
        kept unless `replace`; none of `staged` is evicted to make room for the others.
        Returns the keys published."""
        layout = self._require_writable()
        for key in staged:
            self._memo.drop(check_key(key))
        published, _ = publish_staged(
            layout,
            staged,
            replace=replace,
            under_index_lock=lambda: self._evict_locked(
                layout,
                max_bytes=self.max_bytes,
                max_entries=self.max_entries,
                protect=frozenset(staged),
            ),
        )
        return published

    def _evict_locked(
        self,
        layout: Layout,
        *,
        max_bytes: int | None,
        max_entries: int | None,
        protect: frozenset[str] = frozenset(),
    ) -> list[str]:
        """Reclaim orphaned temp files, then evict LRU entries until the limits hold; the
        caller holds the index lock."""
        for path in eviction.reap_orphans(layout.tmp_dir):
            log.info("removed %s, left by a writer that died", path)
        if max_bytes is None and max_entries is None:
            return []
        victims = eviction.plan(
            eviction.scan(layout), max_bytes=max_bytes, max_entries=max_entries, protect=protect
        )
        evicted = []
        for key in victims:
            self._memo.drop(key)
            if discard_locked(layout, layout.entry_path(key)):
                evicted.append(key)
                log.info("evicted %s from %s (LRU)", key, layout.root)
        return evicted

    def prune(self, *, max_bytes: int | None = None, max_entries: int | None = None) -> list[str]:
        """Evict LRU entries of the writable cache down to the limits (default: the cache's);
        also delete orphaned temp files and stale quarantined files. Returns the evicted keys."""
        layout = self._require_writable()
        if not layout.version_dir.exists():
            return []
        with hold(layout.index_lock_path):
            victims = self._evict_locked(
                layout,
                max_bytes=self.max_bytes if max_bytes is None else max_bytes,
                max_entries=self.max_entries if max_entries is None else max_entries,
            )
        eviction.remove_stale(layout.quarantine_dir)
        return victims

    def remove(self, kernel_key: str) -> bool:
        """Remove one entry of the writable cache (whatever is at its path); True if it was."""
        layout = self._require_writable()
        path = layout.entry_path(kernel_key)
        self._memo.drop(kernel_key)
        if not os.path.lexists(path):
            return False
        with hold(layout.index_lock_path):
            return discard_locked(layout, path)

    def clear(self) -> int:
        """Remove every entry and quarantined file of the writable cache; return the count.

        Whatever sits at an entry path is removed (a directory is moved to quarantine/);
        what cannot be removed is logged and skipped, never stopping the others.
        """
        layout = self._require_writable()
        self._memo.clear()
        if not layout.version_dir.exists():
            return 0
        with hold(layout.index_lock_path):
            count = sum(discard_locked(layout, layout.entry_path(k)) for k in layout.entry_keys())
            self._evict_locked(layout, max_bytes=None, max_entries=None)  # orphans only
        eviction.remove_stale(layout.quarantine_dir, older_than_s=-1.0)
        return count

    def verify(self) -> list[BadEntry]:
        """Check every entry of every layer; quarantine bad ones of the writable cache."""
        self._memo.clear()
        return verify_layers(self._layers)

    # ---------------------------------------------------------------------- single-flight

    @contextmanager
    def build_lock(self, kernel_key: str, *, timeout_s: float) -> Iterator[bool]:
        """Hold `kernel_key`'s single-flight lock for the block if it frees within `timeout_s`;
        yields whether it is held. Whoever builds (or tunes) the key holds it, so the others
        wait and then find the entry instead of building it again."""
        check_key(kernel_key)
        with try_hold(
            self._require_writable().key_lock_path(kernel_key), timeout_s=timeout_s
        ) as held:
            yield held

    def get_or_build(
        self,
        kernel_key: str,
        build_fn: Callable[[], KernelPayload],
        *,
        wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
        arch: str | None = None,
        template_hash: str | None = None,
        nvrtc_version: str | None = None,
    ) -> CacheEntry:
        """The entry for `kernel_key`, building it with `build_fn` if no valid one exists.

        Single-flight: of several processes missing the same key, one builds while the
        others wait on the key's lock and then load its result. A waiter that waits longer
        than `wait_timeout_s` builds itself; a builder that dies releases the lock at once.
        """
        want = {"arch": arch, "template_hash": template_hash, "nvrtc_version": nvrtc_version}
        entry = self.get(kernel_key, **want)
        if entry is not None:
            return entry
        with self.build_lock(kernel_key, timeout_s=wait_timeout_s) as locked:
            if not locked:
                log.warning(
                    "waited %.1f s for another process to build %s; building it here",
                    wait_timeout_s,
                    kernel_key,
                )
            else:
                entry = self.get(kernel_key, **want)
                if entry is not None:
                    return entry
            built = build_fn()
            stored = self.put(kernel_key, cubin=built.cubin, ptx=built.ptx, metadata=built.metadata)
        served, reason = serve(stored, **want)
        if served is None:  # the builder made something the caller could never load
            raise TesseraError(
                f"get_or_build({kernel_key!r}): the entry build_fn produced is unusable: "
                f"{reason}; build for the arch, template and NVRTC the caller asked for"
            )
        return served
