"""Real processes on real files: stress, SIGKILLed writers and lock holders, single-flight."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cache_workers import (
    consistent,
    put_version,
    single_flight_worker,
    stress_worker,
)

from cache import KernelCache

ROOT = Path(__file__).resolve().parents[2]
N_PROCS = 8
OPS_PER_PROC = 260  # 8 x 260 = 2080 ops
SPAWN = multiprocessing.get_context("spawn")


def _cache(path: Path, **kwargs: object) -> KernelCache:
    return KernelCache(cache_dir=path, read_only_dirs=(), memo=False, **kwargs)  # type: ignore[arg-type]


def _spawn_python(code: str, **env: str) -> subprocess.Popen[bytes]:
    """Run `code` in a fresh interpreter that can import the project."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}
    environ.update(env)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=environ)


def _wait_for(predicate, what: str, limit_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


@contextmanager
def _slow_builder(cache_dir: Path, builds: Path, key: str) -> Iterator[None]:
    """For the block, another process holds `key`'s build lock, building for 60 s; it is
    SIGKILLed on leaving the block."""
    builder = _spawn_python(
        f"""
        from cache_workers import single_flight_worker
        single_flight_worker(({str(cache_dir)!r}, {str(builds)!r}, {key!r}, 60.0, 60.0))
        """
    )
    try:
        _wait_for(lambda: any(builds.iterdir()), "the slow builder to start")
        yield
    finally:
        builder.send_signal(signal.SIGKILL)
        builder.wait()


def test_stress_many_processes_keep_every_completed_put(tmp_path: Path) -> None:
    cache_dir = tmp_path / "kernels"
    keys = [f"gemm.fp16.m{64 * i}.n64.k64.sm_80" for i in range(12)]
    prune_bytes = 6 * 3000  # about half the keys fit: prunes really evict
    tasks = [(str(cache_dir), w, OPS_PER_PROC, keys, prune_bytes) for w in range(N_PROCS)]
    with SPAWN.Pool(N_PROCS) as pool:
        results = pool.map(stress_worker, tasks)

    errors = [e for r in results for e in r["errors"]]
    assert errors == []
    total_ops = sum(sum(v for k, v in r["counts"].items() if k != "hit") for r in results)
    assert total_ops >= 2000
    assert sum(r["counts"]["prune"] for r in results) > 0
    assert sum(r["counts"]["hit"] for r in results) > 0

    cache = _cache(cache_dir)
    assert cache.verify() == []
    puts = [p for r in results for p in r["puts"]]
    versions_of: dict[str, set[str]] = {}
    for key, version, _ in puts:
        versions_of.setdefault(key, set()).add(version)
    for key in cache.list_keys():
        entry = cache.get(key)
        assert entry is not None
        assert entry.metadata["version"] in versions_of[key]  # written by a completed put
        assert consistent(key, entry)
    # A put that completed after the last prune ended cannot have been evicted (one that
    # completed while a prune was waiting for the index lock may have been, by design).
    last_prune = max(t for r in results for t in r["prune_ends"])
    for key, version, done in puts:
        if done > last_prune:
            assert cache.get(key) is not None, f"completed put {key} {version} lost"
    assert list((cache_dir / "v1" / "tmp").iterdir()) == []
    assert list((cache_dir / "v1" / "quarantine").iterdir()) == []  # no reader saw a bad entry


def test_writer_killed_mid_put_leaves_old_entry_and_next_put_works(tmp_path: Path) -> None:
    cache_dir = tmp_path / "kernels"
    key, fresh_key = "gemm.fp16.m64.n64.k64.sm_80", "gemm.fp16.m128.n64.k64.sm_80"
    put_version(_cache(cache_dir), key, "old")
    writer = _spawn_python(
        f"""
        from cache import KernelCache
        from cache_workers import put_version
        cache = KernelCache(cache_dir={str(cache_dir)!r}, read_only_dirs=())
        put_version(cache, {key!r}, "killed")
        put_version(cache, {fresh_key!r}, "killed")
        """,
        TESSERA_CACHE_WRITE_DELAY_S="30",
    )
    tmp_dir = cache_dir / "v1" / "tmp"
    try:
        _wait_for(lambda: any(p.stat().st_size > 0 for p in tmp_dir.iterdir()), "a partial write")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert len(list(tmp_dir.iterdir())) == 1  # the orphan: never looked at by readers

    cache = _cache(cache_dir)
    entry = cache.get(key)
    assert entry is not None and entry.metadata["version"] == "old" and consistent(key, entry)
    assert cache.get(fresh_key) is None
    assert cache.verify() == []

    put_version(cache, key, "new")
    put_version(cache, fresh_key, "new")
    for k in (key, fresh_key):
        got = _cache(cache_dir).get(k)
        assert got is not None and got.metadata["version"] == "new" and consistent(k, got)
    assert list(tmp_dir.iterdir()) == []  # the dead writer's orphan: reclaimed by eviction


def test_lock_holder_killed_does_not_block_writers(tmp_path: Path) -> None:
    cache_dir = tmp_path / "kernels"
    ready = tmp_path / "locked"
    holder = _spawn_python(
        f"""
        import pathlib, time
        from cache.layout import Layout
        from cache.lock import hold
        with hold(Layout(root=pathlib.Path({str(cache_dir)!r})).index_lock_path):
            pathlib.Path({str(ready)!r}).write_text("1")
            time.sleep(60)
        """
    )
    try:
        _wait_for(ready.exists, "the holder to take the index lock")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (cache_dir / "v1" / "locks" / "index.lock").exists()  # left behind, yet not stale
    cache = _cache(cache_dir)
    put_version(cache, "gemm.fp16.m64.n64.k64.sm_80", "after-kill")
    assert cache.get("gemm.fp16.m64.n64.k64.sm_80") is not None


def test_single_flight_builds_once_for_many_waiters(tmp_path: Path) -> None:
    cache_dir, builds = tmp_path / "kernels", tmp_path / "builds"
    builds.mkdir()
    key = "attention_fwd.fp16.b1.h8.sq1024.skv1024.d64.causal.sm_80"
    n = 6
    tasks = [(str(cache_dir), str(builds), key, 1.5, 120.0)] * n
    with SPAWN.Pool(n) as pool:
        versions = pool.map(single_flight_worker, tasks)
    built = sorted(p.name for p in builds.iterdir())
    assert len(built) == 1, built
    assert versions == [built[0]] * n


def test_waiter_builds_itself_after_timeout(tmp_path: Path) -> None:
    cache_dir, builds = tmp_path / "kernels", tmp_path / "builds"
    builds.mkdir()
    key = "gemm.fp16.m64.n64.k64.sm_80"
    with _slow_builder(cache_dir, builds, key):
        version = single_flight_worker((str(cache_dir), str(builds), key, 0.0, 0.3))
    assert len(list(builds.iterdir())) == 2  # the stuck one and ours
    assert version.startswith(f"build-{os.getpid()}-")


def test_builder_killed_mid_build_releases_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir, builds = tmp_path / "kernels", tmp_path / "builds"
    builds.mkdir()
    key = "gemm.fp16.m64.n64.k64.sm_80"
    with _slow_builder(cache_dir, builds, key):
        pass  # killed mid-build, holding the key's lock
    with caplog.at_level(logging.WARNING, logger="tessera.cache"):
        version = single_flight_worker((str(cache_dir), str(builds), key, 0.0, 120.0))
    assert version.startswith(f"build-{os.getpid()}-")
    assert not any("waited" in r.getMessage() for r in caplog.records)  # lock taken, not timed out


def test_writers_killed_at_random_moments_never_leave_a_bad_entry(tmp_path: Path) -> None:
    cache_dir = tmp_path / "kernels"
    keys = [f"gemm.fp16.m{64 * i}.n64.k64.sm_80" for i in range(1, 4)]
    rng = random.Random(7)
    for round_ in range(5):
        started = tmp_path / f"started-{round_}"
        writer = _spawn_python(
            f"""
            import itertools, pathlib
            from cache import KernelCache
            from cache_workers import put_version
            cache = KernelCache(cache_dir={str(cache_dir)!r}, read_only_dirs=(), max_entries=2)
            pathlib.Path({str(started)!r}).write_text("1")
            for i in itertools.count():
                put_version(cache, {keys!r}[i % 3], "r{round_}-" + str(i))
            """
        )
        try:
            _wait_for(started.exists, "the writer to start")
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        cache = _cache(cache_dir)
        assert cache.verify() == []
        for key in cache.list_keys():
            entry = cache.get(key)
            assert entry is not None and consistent(key, entry)
    assert _cache(cache_dir).list_keys() != []  # the writers did complete puts between kills
    put_version(_cache(cache_dir), keys[0], "after")
    assert _cache(cache_dir).get(keys[0]).metadata["version"] == "after"  # type: ignore[union-attr]


def _disk_bytes(cache_dir: Path) -> int:
    """What the cache holds on disk: entries and temp files alike."""
    version = cache_dir / "v1"
    return sum(p.stat().st_size for d in ("entries", "tmp") for p in (version / d).iterdir())


def test_a_dead_writers_temp_file_counts_and_is_reclaimed_however_young(tmp_path: Path) -> None:
    cache_dir = tmp_path / "kernels"
    key, other = "gemm.fp16.m64.n64.k64.sm_80", "gemm.fp16.m128.n64.k64.sm_80"
    writer = _spawn_python(
        f"""
        from cache import KernelCache
        from cache_workers import put_version
        put_version(KernelCache(cache_dir={str(cache_dir)!r}, read_only_dirs=()), {key!r}, "w")
        """,
        TESSERA_CACHE_WRITE_DELAY_S="30",
    )
    tmp_dir = cache_dir / "v1" / "tmp"
    try:
        _wait_for(
            lambda: tmp_dir.exists() and any(p.stat().st_size for p in tmp_dir.iterdir()),
            "a partial write",
        )
        _cache(cache_dir).prune(max_bytes=0)  # the writer is alive: its temp file stays
        assert len(list(tmp_dir.iterdir())) == 1
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    orphan = next(tmp_dir.iterdir())
    assert time.time() - orphan.stat().st_mtime < 3600  # young: no age rule would reclaim it

    orphan_bytes = orphan.stat().st_size
    put_version(_cache(cache_dir), other, "v")
    entry_path = cache_dir / "v1" / "entries" / f"{other}.kernel"
    # The re-put's metadata holds a new created_at, whose float repr may be a digit or two
    # longer: the limit leaves room for that, never for the orphan as well.
    slack_bytes = 16
    assert orphan_bytes > slack_bytes
    limit_bytes = entry_path.stat().st_size + slack_bytes
    put_version(_cache(cache_dir, max_bytes=limit_bytes), other, "v")  # an eviction pass
    assert not orphan.exists()
    assert entry_path.exists()
    assert _disk_bytes(cache_dir) == entry_path.stat().st_size  # the orphan counted, reclaimed
