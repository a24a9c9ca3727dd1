"""KernelCache on real files: round trip, validity, corruption handling and read-only layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cache_workers import consistent, metadata_for, payload_for, put_version

from cache import KernelCache
from tessera_core.errors import CacheMissError, InvalidCacheKeyError

KEY = "attention_fwd.fp16.b1.h8.sq1024.skv1024.d64.noncausal.sm_80"


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its bytes and mtime: to show nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_put_then_get_in_a_fresh_instance_returns_the_same_bytes(cache_dir: Path) -> None:
    put_version(KernelCache(), KEY, "v1")  # default dir: TESSERA_CACHE_DIR (the fixture)
    entry = KernelCache(memo=False).get(KEY, arch="sm_80", template_hash="tmpl-1")
    assert entry is not None and consistent(KEY, entry)
    assert entry.layer == cache_dir and not entry.read_only and not entry.use_ptx
    assert entry.metadata["objective"] == {"kind": "time_ms", "value": 0.5}
    assert entry.config == metadata_for("v1")["config"] and entry.arch == "sm_80"
    assert (cache_dir / "v1" / "entries" / f"{KEY}.kernel").is_file()


def test_put_replaces_the_entry_and_memo_follows(cache_dir: Path) -> None:
    cache = KernelCache()
    put_version(cache, KEY, "v1")
    assert cache.get(KEY).metadata["version"] == "v1"  # type: ignore[union-attr]
    put_version(cache, KEY, "v2")
    assert cache.get(KEY).metadata["version"] == "v2"  # type: ignore[union-attr]
    assert KernelCache().get(KEY).metadata["version"] == "v2"  # type: ignore[union-attr]


def test_memo_serves_without_reading_the_file(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = KernelCache()
    put_version(cache, KEY, "v1")
    first = cache.get(KEY)
    monkeypatch.setattr("cache.inventory.read_entry", lambda *a, **k: pytest.fail("read the file"))
    assert cache.get(KEY) is first
    cache.forget()
    monkeypatch.undo()
    assert cache.get(KEY) is not first and cache.get(KEY) is not None


def test_memo_sees_a_republish_or_eviction_by_another_process(cache_dir: Path) -> None:
    cache = KernelCache(touch_interval_s=0.0)
    put_version(cache, KEY, "v1")
    assert cache.get(KEY).metadata["version"] == "v1"  # type: ignore[union-attr]
    assert cache.get(KEY).metadata["version"] == "v1"  # type: ignore[union-attr]  # memo hit
    put_version(KernelCache(), KEY, "v2")  # another instance: another process's memo
    assert cache.get(KEY).metadata["version"] == "v2"  # type: ignore[union-attr]
    assert KernelCache().prune(max_bytes=0) == [KEY]
    assert cache.get(KEY) is None


def test_memo_of_a_read_only_layer_yields_to_a_new_writable_entry(tmp_path: Path) -> None:
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    put_version(KernelCache(cache_dir=shipped, read_only_dirs=()), KEY, "shipped")
    cache = KernelCache(cache_dir=user, read_only_dirs=[shipped])
    assert cache.get(KEY).metadata["version"] == "shipped"  # type: ignore[union-attr]
    put_version(KernelCache(cache_dir=user, read_only_dirs=()), KEY, "user")
    assert cache.get(KEY).metadata["version"] == "user"  # type: ignore[union-attr]


def test_validity_rejects_stale_template_nvrtc_and_unrunnable_arch(cache_dir: Path) -> None:
    put_version(KernelCache(), KEY, "v1")  # built for sm_80, template tmpl-1, NVRTC 12.8
    for memo in (False, True):
        cache = KernelCache(memo=memo)
        cache.get(KEY)  # fills the memo when enabled: the memo path must check too
        assert cache.get(KEY, template_hash="tmpl-2") is None
        assert cache.get(KEY, nvrtc_version="13.0") is None
        assert cache.get(KEY, arch="sm_75") is None
        cubin_ok = cache.get(KEY, arch="sm_86")
        assert cubin_ok is not None and not cubin_ok.use_ptx
        jit = cache.get(KEY, arch="sm_90")
        assert jit is not None and jit.use_ptx and jit.ptx


def test_ptx_only_entry_is_flagged_use_ptx(cache_dir: Path) -> None:
    _, ptx = payload_for(KEY, "p")
    KernelCache().put(KEY, cubin=None, ptx=ptx, metadata=metadata_for("p"))
    entry = KernelCache().get(KEY, arch="sm_80")
    assert entry is not None and entry.use_ptx and entry.cubin is None


def test_require_raises_a_miss_naming_layers_and_reasons(cache_dir: Path) -> None:
    put_version(KernelCache(), KEY, "v1")
    with pytest.raises(CacheMissError) as info:
        KernelCache(memo=False).require(KEY, template_hash="other")
    assert str(cache_dir) in str(info.value) and "template" in str(info.value)
    with pytest.raises(CacheMissError):
        KernelCache().require("gemm.fp16.m1.n1.k1.sm_80")


def test_bad_key_is_refused(cache_dir: Path) -> None:
    with pytest.raises(InvalidCacheKeyError):
        KernelCache().get("../../etc/passwd")
    with pytest.raises(InvalidCacheKeyError):
        put_version(KernelCache(), "a/b", "v")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-7], id="truncated"),
        pytest.param(lambda b: b[:-100] + bytes([b[-100] ^ 0xFF]) + b[-99:], id="flipped-byte"),
        pytest.param(lambda b: b.replace(b'"version"', b'"versioN"'), id="metadata-edit"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_corrupt_entry_is_a_miss_quarantined_and_replaceable(cache_dir: Path, damage) -> None:  # type: ignore[no-untyped-def]
    put_version(KernelCache(), KEY, "v1")
    path = cache_dir / "v1" / "entries" / f"{KEY}.kernel"
    path.write_bytes(damage(path.read_bytes()))
    cache = KernelCache(memo=False)
    entry, reasons = cache.lookup(KEY)
    assert entry is None and any("corrupt" in r for r in reasons)
    assert not path.exists()
    assert len(list((cache_dir / "v1" / "quarantine").iterdir())) == 1
    put_version(cache, KEY, "v2")
    again = cache.get(KEY)
    assert again is not None and again.metadata["version"] == "v2" and consistent(KEY, again)


def test_verify_reports_and_removes_bad_entries(cache_dir: Path) -> None:
    cache = KernelCache(memo=False)
    keys = [f"gemm.fp16.m{i}.n64.k64.sm_80" for i in (64, 128, 256)]
    for key in keys:
        put_version(cache, key, "v")
    bad_path = cache_dir / "v1" / "entries" / f"{keys[1]}.kernel"
    bad_path.write_bytes(bad_path.read_bytes()[:-1])
    bad = cache.verify()
    assert [(b.kernel_key, b.removed) for b in bad] == [(keys[1], True)]
    assert cache.list_keys() == sorted([keys[0], keys[2]])
    assert cache.verify() == []


def test_entry_renamed_to_another_key_is_not_served(cache_dir: Path) -> None:
    cache = KernelCache(memo=False)
    put_version(cache, KEY, "v1")
    entries = cache_dir / "v1" / "entries"
    other = "gemm.fp16.m1.n1.k1.sm_80"
    os.rename(entries / f"{KEY}.kernel", entries / f"{other}.kernel")
    assert cache.get(other) is None


def test_read_only_layer_is_searched_never_written_nor_evicted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "model" / "kernels"
    put_version(KernelCache(cache_dir=shipped, read_only_dirs=()), KEY, "shipped")
    other = "gemm.fp16.m64.n64.k64.sm_80"
    put_version(KernelCache(cache_dir=shipped, read_only_dirs=()), other, "shipped")
    corrupt_path = shipped / "v1" / "entries" / f"{other}.kernel"
    corrupt_path.write_bytes(corrupt_path.read_bytes()[:-1])
    before = _tree(shipped)

    monkeypatch.setenv("TESSERA_CACHE_PATH", str(shipped))
    cache = KernelCache(cache_dir=tmp_path / "user", max_bytes=1, touch_interval_s=0.0)
    assert cache.search_path.read_only == (shipped,)
    entry = cache.get(KEY)
    assert entry is not None and entry.read_only and entry.metadata["version"] == "shipped"
    assert cache.get(other) is None  # corrupt in the read-only layer: a miss, left in place
    for i in range(3):  # over the 1-byte limit: evicts only the writable layer
        put_version(cache, f"gemm.fp16.m{i + 1}.n8.k8.sm_80", "user")
    cache.prune(max_bytes=0)
    assert [b.removed for b in cache.verify()] == [False]
    assert _tree(shipped) == before

    put_version(cache, KEY, "user")  # the writable layer comes first
    assert KernelCache(cache_dir=tmp_path / "user").get(KEY).metadata["version"] == "user"  # type: ignore[union-attr]


def test_read_only_cache_refuses_writes(tmp_path: Path) -> None:
    from tessera_core.errors import TesseraError

    cache = KernelCache(cache_dir=tmp_path / "ro", writable=False, read_only_dirs=())
    with pytest.raises(TesseraError, match="no writable"):
        put_version(cache, KEY, "v")
    assert not (tmp_path / "ro").exists()


def test_old_format_entries_are_never_served(cache_dir: Path) -> None:
    put_version(KernelCache(), KEY, "v1")
    path = cache_dir / "v1" / "entries" / f"{KEY}.kernel"
    blob = path.read_bytes()
    old_dir = cache_dir / "v0" / "entries"  # a previous format's directory: not searched
    old_dir.mkdir(parents=True)
    (old_dir / path.name).write_bytes(blob)
    path.write_bytes(blob.replace(b"TESSERA-KERNEL-ENTRY v1 ", b"TESSERA-KERNEL-ENTRY v0 ", 1))
    entry, reasons = KernelCache(memo=False).lookup(KEY)
    assert entry is None and any("format" in r for r in reasons)


def test_search_path_from_environment_and_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cache import search_path

    a, b, w = tmp_path / "a", tmp_path / "b", tmp_path / "w"
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(w))
    monkeypatch.setenv("TESSERA_CACHE_PATH", os.pathsep.join([str(a), str(w), str(b)]))
    assert search_path().all() == [w, a, b]  # the writable one is not repeated read-only
    assert search_path(read_only_dirs=[b]).all() == [w, b]  # the API overrides the env
    assert search_path(cache_dir=a, read_only_dirs=()).all() == [a]
    ro = search_path(cache_dir=a, read_only_dirs=[b], writable=False)
    assert ro.writable is None and ro.read_only == (a, b)


def test_get_or_build_refuses_to_return_an_entry_the_caller_cannot_load(tmp_path: Path) -> None:
    from cache.entry import KernelPayload
    from tessera_core.errors import TesseraError

    cache = KernelCache(cache_dir=tmp_path)
    cubin, ptx = payload_for("gemm.fp16.m1.n1.k1.sm_90", "v1")

    def build_for_another_template() -> KernelPayload:
        return KernelPayload(
            cubin=cubin, ptx=ptx, metadata={**metadata_for("v1"), "template_hash": "old"}
        )

    with pytest.raises(TesseraError, match=r"unusable: .*template"):
        cache.get_or_build(
            "gemm.fp16.m1.n1.k1.sm_90", build_for_another_template, template_hash="new"
        )


@pytest.mark.timeout(30)  # before key locks had their own directory, this waited 60 s
def test_a_key_named_index_does_not_share_the_index_lock(cache_dir: Path) -> None:
    from cache import KernelPayload, Layout

    layout = Layout(root=cache_dir)
    assert layout.key_lock_path("index") != layout.index_lock_path
    cubin, ptx = payload_for("index", "v1")
    built = KernelPayload(cubin=cubin, ptx=ptx, metadata=metadata_for("v1"))
    entry = KernelCache().get_or_build("index", lambda: built, wait_timeout_s=5.0)
    assert entry.metadata["version"] == "v1" and consistent("index", entry)


@pytest.mark.parametrize("key", [1, None, 1.5, b"gemm.fp16", ["gemm"], {"k": 1}])
def test_a_key_that_is_not_a_string_raises_invalid_key(
    cache_dir: Path, tmp_path: Path, key: Any
) -> None:
    from cache import KernelPayload, export_bundle

    cache = KernelCache()
    put_version(cache, KEY, "v1")
    cache.get(KEY)  # a filled memo must not be consulted before the key is checked
    calls = {
        "get": lambda: cache.get(key),
        "require": lambda: cache.require(key),
        "put": lambda: put_version(cache, key, "v"),
        "remove": lambda: cache.remove(key),
        "get_or_build": lambda: cache.get_or_build(
            key, lambda: KernelPayload(cubin=b"x", ptx=None)
        ),
        "export": lambda: export_bundle(cache, tmp_path / "b.tar.gz", keys=[key]),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidCacheKeyError):
            call()
            pytest.fail(f"{name} accepted {key!r}")
