"""Bundles: export/import round trip, and malicious bundles refused with nothing written."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_workers import consistent, put_version

from cache import KernelCache, export_bundle, import_bundle
from cache.entry import sha256_hex
from tessera_core.errors import BundleError

KEYS = ["gemm.fp16.m64.n64.k64.sm_80", "attention_fwd.fp16.b1.h8.sq512.skv512.d64.causal.sm_80"]


def _cache(path: Path) -> KernelCache:
    return KernelCache(cache_dir=path, read_only_dirs=(), memo=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_export_then_import_into_an_empty_cache_serves_hits(tmp_path: Path) -> None:
    src = _cache(tmp_path / "src")
    for key in KEYS:
        put_version(src, key, "shipped")
    bundle = tmp_path / "model-kernels.tar.gz"
    assert sorted(export_bundle(src, bundle)) == sorted(KEYS)

    dst = _cache(tmp_path / "dst")
    report = import_bundle(bundle, dst)
    assert sorted(report.imported) == sorted(KEYS) and report.skipped == []
    for key in KEYS:
        entry = _cache(tmp_path / "dst").get(key, arch="sm_80", template_hash="tmpl-1")
        assert entry is not None and consistent(key, entry)
    with tarfile.open(bundle) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {r["kernel_key"] for r in manifest["entries"]} == set(KEYS)
    assert all(r["arch"] == "sm_80" and r["template_hash"] == "tmpl-1" for r in manifest["entries"])


def test_import_keeps_existing_entries_unless_replace(tmp_path: Path) -> None:
    src = _cache(tmp_path / "src")
    put_version(src, KEYS[0], "bundle")
    bundle = tmp_path / "b.tar.gz"
    export_bundle(src, bundle, keys=[KEYS[0]])
    dst = _cache(tmp_path / "dst")
    put_version(dst, KEYS[0], "local")
    assert import_bundle(bundle, dst).skipped == [KEYS[0]]
    assert dst.get(KEYS[0]).metadata["version"] == "local"  # type: ignore[union-attr]
    assert import_bundle(bundle, dst, replace=True).imported == [KEYS[0]]
    assert dst.get(KEYS[0]).metadata["version"] == "bundle"  # type: ignore[union-attr]


def test_export_of_a_missing_key_fails(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no valid entry"):
        export_bundle(_cache(tmp_path / "src"), tmp_path / "b.tar.gz", keys=["gemm.x.sm_80"])
    assert not (tmp_path / "b.tar.gz").exists()


# ------------------------------------------------------------------ malicious bundles

Member = tuple[tarfile.TarInfo, bytes | None]


def _good_members(tmp_path: Path) -> tuple[list[Member], list[dict[str, object]]]:
    """A valid entry member and its manifest record: each evil bundle carries one too."""
    src = _cache(tmp_path / "evil-src")
    put_version(src, KEYS[0], "evil-src")
    blob = (tmp_path / "evil-src" / "v1" / "entries" / f"{KEYS[0]}.kernel").read_bytes()
    name = f"entries/{KEYS[0]}.kernel"
    record = {"kernel_key": KEYS[0], "file": name, "bytes": len(blob), "sha256": sha256_hex(blob)}
    return [(_info(name, len(blob)), blob)], [record]


def _info(
    name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mode = size, kind, link, 0o644
    return info


def _write_bundle(path: Path, members: list[Member], records: list[dict[str, object]]) -> None:
    manifest = {"format": "tessera-kernel-bundle", "bundle_version": 1}
    manifest |= {"cache_format_version": 1, "entries": records}
    data = json.dumps(manifest).encode()
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(_info("manifest.json", len(data)), io.BytesIO(data))
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)


def _evil_traversal(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    m.append((_info("entries/../../../outside.kernel", 5), b"owned"))
    return "unexpected member"


def _evil_dotdot_key(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    m.append((_info("../outside.kernel", 5), b"owned"))
    return "unexpected member"


def _evil_absolute(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    m.append((_info(str(tmp / "outside.kernel"), 5), b"owned"))
    return "unexpected member"


def _evil_symlink(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    m.append((_info(f"entries/{KEYS[1]}.kernel", 0, tarfile.SYMTYPE, str(tmp / "outside")), None))
    return "is a link"


def _evil_hardlink(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    m.append((_info(f"entries/{KEYS[1]}.kernel", 0, tarfile.LNKTYPE, "/etc/passwd"), None))
    return "is a link"


def _evil_device(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    info = _info(f"entries/{KEYS[1]}.kernel", 0, tarfile.CHRTYPE)
    info.devmajor, info.devminor = 1, 3
    m.append((info, None))
    return "not a regular file"


def _evil_checksum(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    r[0]["sha256"] = "0" * 64
    return "SHA-256 does not match"


def _evil_tampered_entry(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    info, blob = m[0]
    assert blob is not None
    bad = blob[:-1] + bytes([blob[-1] ^ 1])  # manifest rewritten to match: entry check catches it
    m[0] = (info, bad)
    r[0]["sha256"] = sha256_hex(bad)
    return "SHA-256 mismatch"


def _evil_unlisted(tmp: Path, m: list[Member], r: list[dict[str, object]]) -> str:
    _, blob = m[0]
    assert blob is not None
    m.append((_info(f"entries/{KEYS[1]}.kernel", len(blob)), blob))
    return "not in the manifest"


EVIL: dict[str, Callable[[Path, list[Member], list[dict[str, object]]], str]] = {
    "path-traversal": _evil_traversal,
    "dotdot": _evil_dotdot_key,
    "absolute-path": _evil_absolute,
    "symlink": _evil_symlink,
    "hardlink": _evil_hardlink,
    "device": _evil_device,
    "checksum-mismatch": _evil_checksum,
    "tampered-entry": _evil_tampered_entry,
    "unlisted-member": _evil_unlisted,
}


@pytest.mark.parametrize("attack", sorted(EVIL))
def test_malicious_bundle_is_refused_and_changes_nothing(tmp_path: Path, attack: str) -> None:
    target = tmp_path / "target"
    put_version(_cache(target), KEYS[1], "existing")
    before = _tree(target)
    members, records = _good_members(tmp_path)
    expected = EVIL[attack](tmp_path, members, records)
    bundle = tmp_path / "evil.tar.gz"
    _write_bundle(bundle, members, records)

    with pytest.raises(BundleError) as info:
        import_bundle(bundle, _cache(target))
    assert expected in str(info.value)
    assert _tree(target) == before
    assert not (tmp_path / "outside.kernel").exists() and not (tmp_path / "outside").exists()
    assert _cache(target).get(KEYS[0]) is None  # the valid member was not imported either


def test_not_a_tarball_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "junk.tar.gz"
    bundle.write_bytes(b"not gzip at all")
    with pytest.raises(BundleError, match="not a readable"):
        import_bundle(bundle, _cache(tmp_path / "target"))
    assert not (tmp_path / "target").exists()


def test_size_caps_refuse_a_bundle_with_a_message_naming_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _cache(tmp_path / "src")
    for key in KEYS:
        put_version(src, key, "shipped")
    bundle = tmp_path / "b.tar.gz"
    export_bundle(src, bundle)
    sizes = sorted(len(src.read_entry_file(key)[0]) for key in KEYS)  # type: ignore[index]
    dst = tmp_path / "dst"

    monkeypatch.setattr("cache.bundle.MAX_MEMBER_BYTES", sizes[0] - 1)
    with pytest.raises(BundleError, match=f"too large .*at most {sizes[0] - 1}"):
        import_bundle(bundle, _cache(dst))
    # Every member under the per-member cap, but not their sum: said so, not "too large".
    monkeypatch.setattr("cache.bundle.MAX_MEMBER_BYTES", sizes[1])
    monkeypatch.setattr("cache.bundle.MAX_TOTAL_BYTES", sizes[1])
    with pytest.raises(BundleError, match="add up to more than") as info:
        import_bundle(bundle, _cache(dst))
    assert "too large" not in str(info.value)
    assert _cache(dst).list_keys() == []


def test_a_bundle_that_does_not_start_with_its_manifest_is_refused_at_once(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "headers.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        for i in range(50):  # empty members: no payload bytes, only headers
            tar.addfile(tarfile.TarInfo(f"junk-{i}"), io.BytesIO(b""))
    with pytest.raises(BundleError, match=r"starts with manifest\.json") as info:
        import_bundle(bundle, _cache(tmp_path / "dst"))
    assert len(info.value.problems) == 1
    assert not (tmp_path / "dst").exists()


def test_a_manifest_of_too_many_entries_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members, records = _good_members(tmp_path)
    bundle = tmp_path / "many.tar.gz"
    _write_bundle(bundle, members, records * 11)
    monkeypatch.setattr("cache.bundle.MAX_MEMBERS", 10)
    with pytest.raises(BundleError, match="more than 10 entries"):
        import_bundle(bundle, _cache(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_import_never_evicts_an_entry_of_the_same_bundle(tmp_path: Path) -> None:
    src = _cache(tmp_path / "src")
    for key in KEYS:
        put_version(src, key, "shipped")
    bundle = tmp_path / "b.tar.gz"
    export_bundle(src, bundle)
    dst = KernelCache(cache_dir=tmp_path / "dst", read_only_dirs=(), max_entries=1, memo=False)
    put_version(dst, "gemm.fp16.m8.n8.k8.sm_80", "local")  # the LRU victim
    report = import_bundle(bundle, dst)
    assert sorted(report.imported) == sorted(KEYS)
    assert dst.list_keys() == sorted(KEYS), "every key reported imported is in the cache"


def test_a_200_character_key_round_trips_through_its_pax_path_header(tmp_path: Path) -> None:
    key = "gemm.fp16." + "x" * 184 + ".sm_80"  # a member name over ustar's 100 characters
    assert len(key) == 200
    src = _cache(tmp_path / "src")
    put_version(src, key, "long")
    bundle = tmp_path / "b.tar.gz"
    export_bundle(src, bundle)
    with tarfile.open(bundle) as tar:
        assert any(m.pax_headers.get("path") == f"entries/{key}.kernel" for m in tar)
    assert import_bundle(bundle, _cache(tmp_path / "dst")).imported == [key]
    entry = _cache(tmp_path / "dst").get(key)
    assert entry is not None and consistent(key, entry)
