"""Hostile things at entry paths: FIFOs, sockets, devices, links, loops, directories, huge files.

Each is a bad entry for every command (get, ls, show, verify, export, prune, clear, eviction):
skipped or quarantined, never a hang, never an abort of the other entries. The per-test
timeouts turn a hang (the failure before the fix) into a quick failure.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_workers import ROOT, put_version, run_limited

from cache import KernelCache
from cache.__main__ import main
from cache.entry_file import MAX_ENTRY_BYTES, read_entry, read_entry_metadata

GOOD = ["gemm.fp16.m64.n64.k64.sm_80", "gemm.fp16.m128.n64.k64.sm_80"]
BAD = "gemm.fp16.m256.n64.k64.sm_80"


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(path.parent)  # AF_UNIX paths are limited to 108 bytes; bind the short name
    try:
        sock.bind(path.name)
    finally:
        os.chdir(cwd)
    sock.close()  # the socket file stays; nothing listens: open() says ENXIO


def _dev_zero_link(path: Path) -> None:
    os.symlink("/dev/zero", path)


def _dev_urandom_link(path: Path) -> None:
    os.symlink("/dev/urandom", path)


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name, path)


def _two_link_loop(path: Path) -> None:
    other = path.with_name("loop-partner")
    other.unlink(missing_ok=True)
    os.symlink(path.name, other)
    os.symlink(other.name, path)


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_bytes(b"x")


def _char_device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("creating a device node needs root (CAP_MKNOD)")


def _sparse_huge(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(8 * 1024**3)  # 8 GiB of holes: no disk used, refused by size unread


PLANTS: dict[str, Callable[[Path], None]] = {
    "fifo": _fifo,
    "socket": _socket,
    "dev-zero-link": _dev_zero_link,
    "dev-urandom-link": _dev_urandom_link,
    "symlink-loop": _symlink_loop,
    "two-link-loop": _two_link_loop,
    "directory": _directory,
    "char-device": _char_device,
    "sparse-8GiB": _sparse_huge,
}


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    root = tmp_path / "kernels"
    cache = KernelCache(cache_dir=root, read_only_dirs=())
    for key in GOOD:
        put_version(cache, key, "good")
    return root


def _bad_path(root: Path) -> Path:
    return root / "v1" / "entries" / f"{BAD}.kernel"


def _plant(root: Path, kind: str) -> Path:
    path = _bad_path(root)
    if not os.path.lexists(path):
        PLANTS[kind](path)
    return path


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_get_is_a_miss_quarantines_and_serves_the_rest(cache_root: Path, kind: str) -> None:
    path = _plant(cache_root, kind)
    cache = KernelCache(cache_dir=cache_root, read_only_dirs=(), memo=False)
    entry, reasons = cache.lookup(BAD)
    assert entry is None and len(reasons) == 1 and "corrupt" in reasons[0]
    assert not os.path.lexists(path), "the bad thing was quarantined"
    assert len(list((cache_root / "v1" / "quarantine").iterdir())) == 1
    assert all(cache.get(key) is not None for key in GOOD)
    put_version(cache, BAD, "fresh")  # the key works again
    assert cache.get(BAD).metadata["version"] == "fresh"  # type: ignore[union-attr]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_a_read_only_layer_skips_it_and_leaves_it(
    cache_root: Path, tmp_path: Path, kind: str
) -> None:
    path = _plant(cache_root, kind)
    cache = KernelCache(cache_dir=tmp_path / "user", read_only_dirs=[cache_root], memo=False)
    assert cache.get(BAD) is None and cache.get(GOOD[0]) is not None
    assert os.path.lexists(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_every_command_skips_or_quarantines_it(
    cache_root: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--cache-dir", str(cache_root)]

    _plant(cache_root, kind)
    assert main([*base, "ls"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(r.split()[0] for r in rows) == sorted([*GOOD, BAD])
    assert any(r.startswith(BAD) and "BAD:" in r for r in rows)

    assert main([*base, "show", GOOD[0]]) == 0
    assert main([*base, "show", BAD]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no cached kernel" in errors[0]  # beside the log warnings

    _plant(cache_root, kind)
    assert main([*base, "verify"]) == 1
    assert f"BAD {BAD}" in capsys.readouterr().out
    assert not os.path.lexists(_bad_path(cache_root))

    _plant(cache_root, kind)
    assert main([*base, "export", str(tmp_path / "b.tar.gz"), "--all"]) == 0
    assert "exported 2 entries" in capsys.readouterr().out

    _plant(cache_root, kind)
    assert main([*base, "prune", "--max-entries", "1"]) == 0
    assert "1 entries evicted" in capsys.readouterr().out

    _plant(cache_root, kind)
    cache = KernelCache(cache_dir=cache_root, read_only_dirs=(), max_entries=1, memo=False)
    put_version(cache, GOOD[0], "evicting")  # eviction scans entries/ with the bad thing in it
    assert GOOD[0] in cache.list_keys()

    _plant(cache_root, kind)
    assert main([*base, "clear"]) == 0
    capsys.readouterr()
    assert not os.path.lexists(_bad_path(cache_root))
    assert KernelCache(cache_dir=cache_root, read_only_dirs=()).list_keys() == []


def test_a_huge_entry_is_refused_by_its_size_unread(cache_root: Path) -> None:
    path = _plant(cache_root, "sparse-8GiB")
    read = read_entry(path, kernel_key=BAD)
    assert read is not None and read.problem is not None
    assert f"more than an entry can hold ({MAX_ENTRY_BYTES})" in read.problem
    listed = read_entry_metadata(path)
    assert listed is not None and listed.problem == read.problem


def test_a_sparse_entry_costs_no_memory(cache_root: Path) -> None:
    """Under a 256 MiB address-space margin, reading an 8 GiB entry whole would fail."""
    _plant(cache_root, "sparse-8GiB")
    result = run_limited(
        f"""
        from cache import KernelCache
        cache = KernelCache(cache_dir={str(cache_root)!r}, read_only_dirs=(), memo=False)
        entry, reasons = cache.lookup({BAD!r})
        assert entry is None, entry
        print("miss:", reasons[0])
        """
    )
    assert result.returncode == 0, result.stderr
    assert "more than an entry can hold" in result.stdout


def test_a_header_claiming_a_huge_metadata_length_is_refused_unread(cache_root: Path) -> None:
    path = _bad_path(cache_root)
    path.write_bytes(b"TESSERA-KERNEL-ENTRY v1 99999999999999 " + b"0" * 64 + b"\n{}")
    for read in (read_entry(path, kernel_key=BAD), read_entry_metadata(path)):
        assert read is not None and "bad metadata length" in str(read.problem)


def test_the_cli_lists_a_fifo_without_hanging_in_a_subprocess(cache_root: Path) -> None:
    import subprocess

    _plant(cache_root, "fifo")
    result = subprocess.run(
        [sys.executable, "-m", "cache", "ls", "--cache-dir", str(cache_root)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "is a FIFO, not a regular file" in result.stdout
