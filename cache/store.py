"""KernelCache: the multi-process safe, LRU-bounded, layered store of tuned kernels.

Concurrency argument (code in cache/publish.py and cache/lock.py, layout in cache/layout.py):

- Publish: a put writes the whole entry (header, metadata, cubin, PTX) to a temp file in the
  same filesystem, fsyncs it, then renames it over `entries/<key>.kernel` and fsyncs the
  directory. rename(2) is atomic, so a reader opens either the old file or the new one,
  never a mix, and a writer killed at any point leaves at most an orphan temp file that no
  reader ever looks at.
- Readers take no lock: they read the entry file whole into memory and verify every
  checksum before returning. If eviction unlinks the file meanwhile, the open descriptor
  still reads the complete old inode (POSIX unlink semantics), so eviction never removes an
  entry "while it is being read": the reader already holds all of it.
- Renames into entries/, eviction and quarantine all run under `locks/index.lock`, so an
  eviction decision can never delete an entry published after it scanned: a completed put
  is only ever removed by a later eviction that saw it, or by a later put of the same key.
- Single-flight builds hold `locks/<key>.lock` while building. All locks are OS flocks,
  released by the kernel when the holder dies (SIGKILL included).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cache import eviction, validity
from cache.entry import CacheEntry, KernelPayload, encode_entry, read_entry_file, verify_entry
from cache.inventory import BadEntry, EntryInfo, list_entries, verify_layers
from cache.layers import search_path
from cache.layout import Layout, check_key
from cache.lock import hold, try_hold
from cache.publish import publish, quarantine
from tessera_core import config
from tessera_core.errors import CacheCorruptError, CacheMissError, TesseraError

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
        self.max_bytes = max_bytes if max_bytes is not None else config.CACHE_MAX_BYTES.get()
        self.max_entries = (
            max_entries if max_entries is not None else config.CACHE_MAX_ENTRIES.get()
        )
        self.touch_interval_s = touch_interval_s
        self._writable = Layout(root=path.writable) if path.writable is not None else None
        self._layers: list[tuple[Layout, bool]] = []
        if self._writable is not None:
            self._layers.append((self._writable, False))
        self._layers += [(Layout(root=p), True) for p in path.read_only]
        self._memo_enabled = memo
        # key -> [entry, monotonic time of its last touch by this process]
        self._memo: dict[str, list[Any]] = {}

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
        memo = self._memo.get(kernel_key)
        if memo is not None:
            served, _ = _serve(
                memo[0], arch=arch, template_hash=template_hash, nvrtc_version=nvrtc_version
            )
            if served is not None:
                if not served.read_only and time.monotonic() - memo[1] > self.touch_interval_s:
                    memo[1] = time.monotonic()
                    _touch(Layout(root=served.layer).entry_path(kernel_key))
                return served, []
        check_key(kernel_key)
        reasons: list[str] = []
        for layout, read_only in self._layers:
            entry, reason = self._load(layout, kernel_key, read_only=read_only)
            if entry is None:
                if reason:
                    reasons.append(reason)
                continue
            served, reason = _serve(
                entry, arch=arch, template_hash=template_hash, nvrtc_version=nvrtc_version
            )
            if served is None:
                reasons.append(f"{layout.entry_path(kernel_key)}: {reason}")
                continue
            if self._memo_enabled:
                self._memo[kernel_key] = [entry, time.monotonic()]
            return served, reasons
        return None, reasons

    def _load(
        self, layout: Layout, kernel_key: str, *, read_only: bool
    ) -> tuple[CacheEntry | None, str | None]:
        """Read and verify one layer's entry; quarantine it (writable layer) if corrupt."""
        path = layout.entry_path(kernel_key)
        try:
            blob, st = read_entry_file(path)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"{path}: unreadable: {exc}"
        try:
            metadata, cubin, ptx = verify_entry(blob, path=str(path), kernel_key=kernel_key)
        except CacheCorruptError as exc:
            log.warning("cache miss, corrupt entry: %s", exc)
            if not read_only:
                quarantine(layout, path, st)
            return None, f"{path}: corrupt: {exc.reason}"
        if not read_only and time.time() - st.st_mtime > self.touch_interval_s:
            _touch(path)
        entry = CacheEntry(
            kernel_key=kernel_key,
            metadata=metadata,
            cubin=cubin,
            ptx=ptx,
            layer=layout.root,
            read_only=read_only,
            size_bytes=len(blob),
        )
        return entry, None

    def read_entry_file(self, kernel_key: str) -> tuple[bytes, Path, dict[str, Any]] | None:
        """The verified bytes of the first entry file for `kernel_key`, its layer and its
        metadata (bundles)."""
        check_key(kernel_key)
        for layout, _ in self._layers:
            path = layout.entry_path(kernel_key)
            try:
                blob, _st = read_entry_file(path)
                metadata, _, _ = verify_entry(blob, path=str(path), kernel_key=kernel_key)
            except FileNotFoundError:
                continue
            except CacheCorruptError as exc:
                log.warning("skipping corrupt entry: %s", exc)
                continue
            return blob, layout.root, metadata
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
        self.publish_file(kernel_key, (head, cubin_bytes, ptx_bytes))
        entry = CacheEntry(
            kernel_key=kernel_key,
            metadata=stored,
            cubin=cubin_bytes if cubin is not None else None,
            ptx=ptx,
            layer=layout.root,
            read_only=False,
            size_bytes=len(head) + len(cubin_bytes) + len(ptx_bytes),
        )
        if self._memo_enabled:
            self._memo[kernel_key] = [entry, time.monotonic()]
        return entry

    def publish_file(
        self, kernel_key: str, parts: Sequence[bytes], *, protect: Iterable[str] = ()
    ) -> list[str]:
        """Write an already-encoded entry file atomically; return the keys evicted to fit it.

        Callers other than `put` (bundle import) must have verified the bytes with
        `verify_entry` first. Keys in `protect` (the rest of an imported bundle) are never
        evicted to make room, nor is `kernel_key`.
        """
        layout = self._require_writable()
        evicted = publish(
            layout,
            check_key(kernel_key),
            parts,
            under_index_lock=lambda: self._evict_locked(
                layout,
                max_bytes=self.max_bytes,
                max_entries=self.max_entries,
                protect=frozenset([kernel_key, *protect]),
            ),
        )
        self._memo.pop(kernel_key, None)
        return evicted

    def _evict_locked(
        self,
        layout: Layout,
        *,
        max_bytes: int | None,
        max_entries: int | None,
        protect: frozenset[str] = frozenset(),
    ) -> list[str]:
        """Evict LRU entries until the limits hold; the caller holds the index lock."""
        if max_bytes is None and max_entries is None:
            return []
        victims = eviction.plan(
            eviction.scan(layout), max_bytes=max_bytes, max_entries=max_entries, protect=protect
        )
        for key in victims:
            layout.entry_path(key).unlink(missing_ok=True)
            self._memo.pop(key, None)
            log.info("evicted %s from %s (LRU)", key, layout.root)
        return victims

    def prune(self, *, max_bytes: int | None = None, max_entries: int | None = None) -> list[str]:
        """Evict LRU entries of the writable cache down to the limits (default: the cache's);
        also delete stale temp and quarantined files. Returns the evicted keys."""
        layout = self._require_writable()
        if not layout.version_dir.exists():
            return []
        with hold(layout.index_lock_path):
            victims = self._evict_locked(
                layout,
                max_bytes=self.max_bytes if max_bytes is None else max_bytes,
                max_entries=self.max_entries if max_entries is None else max_entries,
            )
        eviction.remove_stale(layout.tmp_dir)
        eviction.remove_stale(layout.quarantine_dir)
        return victims

    def remove(self, kernel_key: str) -> bool:
        """Remove one entry of the writable cache; True if it was there."""
        layout = self._require_writable()
        path = layout.entry_path(kernel_key)
        self._memo.pop(kernel_key, None)
        if not path.exists():
            return False
        with hold(layout.index_lock_path):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
        return True

    def clear(self) -> int:
        """Remove every entry and quarantined file of the writable cache; return the count."""
        layout = self._require_writable()
        self._memo.clear()
        if not layout.version_dir.exists():
            return 0
        count = 0
        with hold(layout.index_lock_path):
            for key in layout.entry_keys():
                layout.entry_path(key).unlink(missing_ok=True)
                count += 1
        eviction.remove_stale(layout.quarantine_dir, older_than_s=-1.0)
        eviction.remove_stale(layout.tmp_dir)  # young temp files may belong to live writers
        return count

    def verify(self) -> list[BadEntry]:
        """Check every entry of every layer; quarantine bad ones of the writable cache."""
        self._memo.clear()
        return verify_layers(self._layers)

    # ---------------------------------------------------------------------- single-flight

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
        layout = self._require_writable()
        with try_hold(layout.key_lock_path(kernel_key), timeout_s=wait_timeout_s) as locked:
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
        served, reason = _serve(stored, **want)
        if served is None:  # the builder made something the caller could never load
            raise TesseraError(
                f"get_or_build({kernel_key!r}): the entry build_fn produced is unusable: "
                f"{reason}; build for the arch, template and NVRTC the caller asked for"
            )
        return served


def _serve(
    entry: CacheEntry,
    *,
    arch: str | None,
    template_hash: str | None,
    nvrtc_version: str | None,
) -> tuple[CacheEntry | None, str | None]:
    """(`entry` as it serves the request, with `use_ptx` set; or None and the reason it cannot)."""
    reason, use_ptx = validity.check(
        entry.metadata,
        has_cubin=entry.cubin is not None,
        has_ptx=entry.ptx is not None,
        arch=arch,
        template_hash=template_hash,
        nvrtc_version=nvrtc_version,
    )
    if reason is not None:
        return None, reason
    return (entry if entry.use_ptx == use_ptx else replace(entry, use_ptx=use_ptx)), None


def _touch(path: Path) -> None:
    """Record a use: the entry file's mtime is its last-use time (contents untouched)."""
    with contextlib.suppress(OSError):  # evicted or replaced meanwhile, or read-only fs
        os.utime(path)
