"""LRU eviction by bytes and entries, last-use recording, and the eviction plan itself."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cache import KernelCache
from cache.eviction import EntryStat, plan

KEYS = [f"gemm.fp16.m{101 + i}.n64.k64.sm_80" for i in range(5)]  # equal lengths: equal sizes


def _entry_size(cache_dir: Path, key: str) -> int:
    return (cache_dir / "v1" / "entries" / f"{key}.kernel").stat().st_size


def _put_spaced(cache: KernelCache, key: str) -> None:
    time.sleep(0.02)  # distinct mtimes: LRU order is by last-use time
    cubin = bytes([len(cache.list_keys()) + 1]) * 2000  # content varies, size does not
    cache.put(key, cubin=cubin, ptx=None, metadata={"arch": "sm_80", "created_at": 1.0})


def test_lru_order_under_a_byte_limit(cache_dir: Path) -> None:
    _put_spaced(KernelCache(), KEYS[0])
    size = _entry_size(cache_dir, KEYS[0])
    KernelCache().clear()

    cache = KernelCache(max_bytes=3 * size, touch_interval_s=0.0, memo=False)
    for key in KEYS[:3]:
        _put_spaced(cache, key)
    assert cache.list_keys() == KEYS[:3]
    time.sleep(0.02)
    assert cache.get(KEYS[0]) is not None  # a use: KEYS[1] is now least recently used
    _put_spaced(cache, KEYS[3])
    assert cache.list_keys() == [KEYS[0], KEYS[2], KEYS[3]]
    _put_spaced(cache, KEYS[4])
    assert cache.list_keys() == [KEYS[0], KEYS[3], KEYS[4]]
    assert sum(_entry_size(cache_dir, k) for k in cache.list_keys()) == 3 * size


def test_memo_hits_record_use_too(cache_dir: Path) -> None:
    cache = KernelCache(max_entries=2, touch_interval_s=0.0)
    _put_spaced(cache, KEYS[0])
    _put_spaced(cache, KEYS[1])
    time.sleep(0.02)
    assert cache.get(KEYS[0]) is not None  # served by the memo, must still touch
    _put_spaced(cache, KEYS[2])
    assert cache.list_keys() == sorted([KEYS[0], KEYS[2]])


def test_touch_interval_keeps_hot_loads_from_writing(cache_dir: Path) -> None:
    cache = KernelCache(touch_interval_s=3600.0, memo=False)
    _put_spaced(cache, KEYS[0])
    path = cache_dir / "v1" / "entries" / f"{KEYS[0]}.kernel"
    old = time.time() - 100
    os.utime(path, (old, old))
    cache.get(KEYS[0])
    assert path.stat().st_mtime == old  # used 100 s ago < 1 h: no write
    KernelCache(touch_interval_s=10.0, memo=False).get(KEYS[0])
    assert path.stat().st_mtime > old + 50


def test_prune_by_entries_and_by_bytes(cache_dir: Path) -> None:
    cache = KernelCache(touch_interval_s=0.0)
    for key in KEYS:
        _put_spaced(cache, key)
    assert cache.prune(max_entries=3) == KEYS[:2]
    assert cache.prune(max_bytes=0) == KEYS[2:]
    assert cache.list_keys() == []


def test_a_put_never_evicts_itself(cache_dir: Path) -> None:
    cache = KernelCache(max_bytes=1)
    for key in KEYS[:3]:
        _put_spaced(cache, key)
        assert cache.list_keys() == [key]


def _stat(key: str, last_used_s: float) -> EntryStat:
    return EntryStat(kernel_key=key, size_bytes=10, last_used_s=last_used_s)


def test_plan_is_lru_and_stops_when_under_the_limits() -> None:
    stats = [_stat("a", 3.0), _stat("b", 1.0), _stat("c", 2.0)]
    assert plan(stats, max_bytes=30, max_entries=None) == []
    assert plan(stats, max_bytes=25, max_entries=None) == ["b"]
    assert plan(stats, max_bytes=10, max_entries=None) == ["b", "c"]
    assert plan(stats, max_bytes=None, max_entries=1) == ["b", "c"]
    assert plan(stats, max_bytes=0, max_entries=None, protect=frozenset("b")) == ["c", "a"]


def test_a_foreign_file_in_entries_breaks_neither_eviction_nor_listing(cache_dir: Path) -> None:
    cache = KernelCache(cache_dir=cache_dir, read_only_dirs=(), max_entries=2)
    _put_spaced(cache, KEYS[0])
    entries = cache_dir / "v1" / "entries"
    for name in (".#editor-lock.kernel", "bad key.kernel"):
        (entries / name).write_bytes(b"not an entry")
        os.utime(entries / name, (1.0, 1.0))  # the oldest: the first eviction candidate
    for key in KEYS[1:3]:
        _put_spaced(cache, key)
    assert cache.list_keys() == sorted(KEYS[1:3])
    assert [info.kernel_key for info in cache.entries()] == sorted(KEYS[1:3])
    assert cache.verify() == []
    assert cache.prune(max_entries=1) == [KEYS[1]]


def test_prune_and_clear_skip_what_they_cannot_remove_in_tmp(cache_dir: Path) -> None:
    cache = KernelCache(cache_dir=cache_dir, read_only_dirs=())
    _put_spaced(cache, KEYS[0])
    stray = cache_dir / "v1" / "tmp" / "not-a-temp-file"
    stray.mkdir()
    (stray / "inside").write_bytes(b"x")
    os.utime(stray, (1.0, 1.0))  # older than any staleness limit
    old_tmp = cache_dir / "v1" / "tmp" / "dead-writer.tmp"
    old_tmp.write_bytes(b"partial")
    os.utime(old_tmp, (1.0, 1.0))
    assert cache.prune() == []
    assert not old_tmp.exists() and stray.is_dir()
    assert cache.clear() == 1


def test_an_abandoned_import_staging_dir_is_reclaimed_a_live_one_kept(cache_dir: Path) -> None:
    cache = KernelCache(cache_dir=cache_dir, read_only_dirs=())
    _put_spaced(cache, KEYS[0])
    dead = cache_dir / "v1" / "tmp" / "bundle.1.dead.import"  # its importer was killed
    dead.mkdir()
    (dead / f"{KEYS[1]}.kernel").write_bytes(b"staged")
    with cache.staging_dir() as live:
        (live / f"{KEYS[2]}.kernel").write_bytes(b"staged")
        assert cache.prune() == []
        assert live.is_dir() and not dead.exists()
    assert not live.exists()


def test_a_temp_file_reaped_before_its_writer_locked_it_is_replaced(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instant between a writer's create and its flock: a reaper that locks first and
    deletes the file must cost the writer only a fresh name."""
    from cache import publish

    real_lock, reaped = publish.lock_fd, list[Path]()

    def reaper_wins_once(fd: int) -> None:
        if not reaped:
            (path,) = (cache_dir / "v1" / "tmp").iterdir()
            path.unlink()
            reaped.append(path)
        real_lock(fd)

    monkeypatch.setattr(publish, "lock_fd", reaper_wins_once)
    cache = KernelCache(cache_dir=cache_dir, read_only_dirs=(), memo=False)
    _put_spaced(cache, KEYS[0])
    assert reaped and cache.get(KEYS[0]) is not None
    assert list((cache_dir / "v1" / "tmp").iterdir()) == []
