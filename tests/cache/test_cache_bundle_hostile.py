"""Bundles that lie in their tar headers, fill the disk or fail half-way: bounded memory, and
an import that leaves all of the bundle or nothing."""

from __future__ import annotations

import errno
import gzip
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cache_workers import consistent, put_version, run_limited

from cache import KernelCache, export_bundle, import_bundle
from cache.entry import sha256_hex
from tessera_core.errors import BundleError

KEYS = [f"gemm.fp16.m{64 * i}.n64.k64.sm_80" for i in (1, 2, 3)]
HUGE_BYTES = 7 * 1024**3  # what a hostile header claims; fits the 11 octal digits of ustar


def _cache(path: Path) -> KernelCache:
    return KernelCache(cache_dir=path, read_only_dirs=(), memo=False)


def _header(name: str, typeflag: bytes, size: int, *, size_field: bytes | None = None) -> bytes:
    """One ustar header block, checksum included, built by hand (tarfile would refuse to)."""
    block = bytearray(512)
    block[0 : len(name)] = name.encode()
    block[100:108] = b"0000644\0"
    block[108:124] = b"0000000\0" * 2
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[136:148] = b"%011o\0" % 0
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _member(name: str, data: bytes) -> bytes:
    return _header(name, b"0", len(data)) + data + bytes(-len(data) % 512)


def _manifest(records: list[dict[str, object]]) -> bytes:
    manifest = {"format": "tessera-kernel-bundle", "bundle_version": 1}
    manifest |= {"cache_format_version": 1, "entries": records}
    return _member("manifest.json", json.dumps(manifest).encode())


def _entry(tmp_path: Path, key: str) -> tuple[bytes, dict[str, object]]:
    src = _cache(tmp_path / "src")
    put_version(src, key, "bundled")
    blob = (tmp_path / "src" / "v1" / "entries" / f"{key}.kernel").read_bytes()
    name = f"entries/{key}.kernel"
    return blob, {"kernel_key": key, "file": name, "bytes": len(blob), "sha256": sha256_hex(blob)}


def _write(path: Path, raw_tar: bytes, *, end: bool = True) -> Path:
    path.write_bytes(gzip.compress(raw_tar + (bytes(1024) if end else b"")))
    return path


def _import_limited(bundle: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return run_limited(
        f"""
        from cache import KernelCache, import_bundle
        from tessera_core.errors import BundleError
        target = KernelCache(cache_dir={str(target)!r}, read_only_dirs=())
        try:
            import_bundle({str(bundle)!r}, target)
        except BundleError as exc:
            print("refused:", exc.problems)
        """
    )


@pytest.mark.parametrize(
    ("typeflag", "name"),
    [(b"x", "././@PaxHeader"), (b"g", "././@GlobalHead"), (b"L", "././@LongLink")],
)
def test_an_extended_header_claiming_gigabytes_is_refused_unread(
    tmp_path: Path, typeflag: bytes, name: str
) -> None:
    bundle = _write(tmp_path / "evil.tar.gz", _header(name, typeflag, HUGE_BYTES))
    result = _import_limited(bundle, tmp_path / "target")
    assert result.returncode == 0, result.stderr  # before: MemoryError reading the header
    assert "refused:" in result.stdout and "not a readable kernel bundle" in result.stdout
    assert not (tmp_path / "target").exists()


def test_a_pax_header_after_the_manifest_is_refused_unread_too(tmp_path: Path) -> None:
    _, record = _entry(tmp_path, KEYS[0])
    raw = _manifest([record]) + _header("././@PaxHeader", b"x", HUGE_BYTES)
    result = _import_limited(_write(tmp_path / "evil.tar.gz", raw), tmp_path / "target")
    assert result.returncode == 0, result.stderr
    assert f"at most {8 * 1024}, refused unread" in result.stdout


def test_a_base256_size_is_refused(tmp_path: Path) -> None:
    size_field = b"\x80" + (HUGE_BYTES * 4).to_bytes(11, "big")
    raw = _header("manifest.json", b"0", 0, size_field=size_field)
    with pytest.raises(BundleError, match="base-256"):
        import_bundle(_write(tmp_path / "b.tar.gz", raw), _cache(tmp_path / "target"))


def test_a_member_missing_from_the_manifest_is_refused_unread(tmp_path: Path) -> None:
    _, record = _entry(tmp_path, KEYS[0])
    # Its header claims 1 MiB that is not there: reading it would say "truncated".
    raw = _manifest([record]) + _header(f"entries/{KEYS[1]}.kernel", b"0", 1024**2)
    with pytest.raises(BundleError, match="not in the manifest; refused unread") as info:
        import_bundle(_write(tmp_path / "b.tar.gz", raw, end=False), _cache(tmp_path / "t"))
    assert "truncated" not in str(info.value)


def test_a_member_larger_than_its_manifest_record_is_refused_unread(tmp_path: Path) -> None:
    blob, record = _entry(tmp_path, KEYS[0])
    raw = _manifest([record]) + _header(str(record["file"]), b"0", len(blob) + 4096)
    with pytest.raises(BundleError, match="bytes in its header, the manifest says"):
        import_bundle(_write(tmp_path / "b.tar.gz", raw, end=False), _cache(tmp_path / "t"))


def test_decompressed_bytes_are_capped_as_they_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob, record = _entry(tmp_path, KEYS[0])
    bundle = _write(tmp_path / "b.tar.gz", _manifest([record]) + _member(str(record["file"]), blob))
    cap = len(blob) + 1  # the manifest's sum fits; manifest, headers and entry do not
    monkeypatch.setattr("cache.bundle.MAX_TOTAL_BYTES", cap)
    with pytest.raises(BundleError, match=f"decompresses to more than {cap} bytes"):
        import_bundle(bundle, _cache(tmp_path / "t"))


def test_an_entry_with_neither_cubin_nor_ptx_is_refused_at_import(tmp_path: Path) -> None:
    import hashlib

    meta = json.dumps(
        {
            "arch": "sm_80",
            "kernel_key": KEYS[0],
            "format_version": 1,
            "payloads": {"cubin": None, "ptx": None},
        }
    ).encode()
    digest = hashlib.sha256(meta).hexdigest().encode()
    blob = b"TESSERA-KERNEL-ENTRY v1 %d %s\n" % (len(meta), digest) + meta
    name = f"entries/{KEYS[0]}.kernel"
    record = {"kernel_key": KEYS[0], "file": name, "bytes": len(blob), "sha256": sha256_hex(blob)}
    bundle = _write(tmp_path / "b.tar.gz", _manifest([record]) + _member(name, blob))
    with pytest.raises(BundleError, match="neither a cubin nor a PTX"):
        import_bundle(bundle, _cache(tmp_path / "t"))


@pytest.mark.timeout(30)
def test_a_fifo_given_as_the_bundle_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle.tar.gz"
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match="not a regular file"):
        import_bundle(fifo, _cache(tmp_path / "t"))


# ------------------------------------------------------------------- all or nothing


def _bundle_of(tmp_path: Path, keys: list[str], *, pad_bytes: int = 0) -> Path:
    src = _cache(tmp_path / "src")
    for key in keys:
        cubin = os.urandom(pad_bytes) if pad_bytes else None  # incompressible: fills a disk
        if cubin is None:
            put_version(src, key, "bundled")
        else:
            src.put(key, cubin=cubin, ptx=None, metadata={"arch": "sm_80", "version": "bundled"})
    bundle = tmp_path / "b.tar.gz"
    export_bundle(src, bundle, keys=keys)
    return bundle


def _leftovers(target: Path) -> list[Path]:
    return list((target / "v1" / "tmp").iterdir())


def test_a_failure_while_publishing_takes_back_what_was_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle_of(tmp_path, KEYS)  # published in key order: m128, m192, then m64
    target = tmp_path / "target"
    put_version(_cache(target), KEYS[1], "local")  # m128: replaced first, then put back
    before = (target / "v1" / "entries" / f"{KEYS[1]}.kernel").read_bytes()
    real_replace, calls = os.replace, []

    def replace_failing_on_the_third(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 3:  # two entries published (one replacing "local"), then no space
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_on_the_third)
    with pytest.raises(BundleError, match="No space left on device") as info:
        import_bundle(bundle, _cache(target), replace=True)
    monkeypatch.undo()
    assert f"{KEYS[0]}.kernel" in str(info.value) and str(target) in str(info.value)
    assert _cache(target).list_keys() == [KEYS[1]]
    assert (target / "v1" / "entries" / f"{KEYS[1]}.kernel").read_bytes() == before
    assert _leftovers(target) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (a disk that fills for real); skipped where mounting is not allowed."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_import_leaves_nothing_of_the_bundle(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    bundle = _bundle_of(tmp_path, KEYS, pad_bytes=400 * 1024)  # 3 x 400 KiB > 1 MiB
    target = small_tmpfs / "kernels"
    put_version(_cache(target), "gemm.fp16.m8.n8.k8.sm_80", "local")
    with pytest.raises(BundleError, match="No space left on device") as info:
        import_bundle(bundle, _cache(target))
    assert str(target) in str(info.value)
    assert _cache(target).list_keys() == ["gemm.fp16.m8.n8.k8.sm_80"]
    assert consistent("gemm.fp16.m8.n8.k8.sm_80", _cache(target).get("gemm.fp16.m8.n8.k8.sm_80"))
    assert _leftovers(target) == []
    # With room again, the same bundle imports whole.
    _cache(target).clear()
    small = _bundle_of(tmp_path / "again", KEYS[:2], pad_bytes=300 * 1024)
    assert sorted(import_bundle(small, _cache(target)).imported) == sorted(KEYS[:2])


# ---------------------------------------------------------------------------- export


def test_export_never_follows_a_planted_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _cache(tmp_path / "src")
    put_version(src, KEYS[0], "v1")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "b.tar.gz"
    # The name the old exporter used, and the first name the new one will draw.
    os.symlink(victim, tmp_path / f".b.tar.gz.{os.getpid()}.tmp")
    os.symlink(victim, tmp_path / ".b.tar.gz.planted.tmp")
    real_token_hex, drawn = secrets.token_hex, []

    def planted_first(nbytes: int) -> str:  # the exporter's first draw hits the planted link
        drawn.append(nbytes)
        return "planted" if len(drawn) == 1 else real_token_hex(nbytes)

    monkeypatch.setattr(secrets, "token_hex", planted_first)
    assert export_bundle(src, out) == [KEYS[0]]
    assert victim.read_bytes() == b"precious"
    assert sorted(import_bundle(out, _cache(tmp_path / "dst")).imported) == [KEYS[0]]
    assert [p.name for p in tmp_path.glob(".b.tar.gz.*")] != [] and all(
        p.is_symlink() for p in tmp_path.glob(".b.tar.gz.*")
    )  # only the planted links remain, untouched
