"""The compile cache: one key change per ingredient, atomic entries, corruption and old formats."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from generator import compile_cache, toolchain
from generator.compile_cache import CompileCache, CompileRecord, compile_key

BASE: dict[str, Any] = {
    "source": 'extern "C" __global__ void k() {}',
    "arch": "sm_90",
    "options": ["-arch=sm_90", "-std=c++17", "--ptxas-options=-v"],
    "nvrtc_version": "13.5",
    "headers_digest": "0" * 64,
}


def _record(tag: str = "x") -> CompileRecord:
    return CompileRecord(
        cubin=b"\x7fELF" + tag.encode() * 100,
        ptx=f".version 9.5\n.target sm_90 // {tag}",
        log="ptxas info    : Used 10 registers",
        options=("-arch=sm_90",),
        arch="sm_90",
        nvrtc_version="13.5",
        compile_time_s=0.25,
    )


@pytest.mark.parametrize(
    ("ingredient", "value"),
    [
        ("source", 'extern "C" __global__ void k() { }'),
        ("arch", "sm_80"),
        ("options", ["-arch=sm_90", "-std=c++17", "--ptxas-options=-v", "-lineinfo"]),
        ("nvrtc_version", "13.6"),
        ("headers_digest", "1" * 64),
    ],
)
def test_key_changes_with_each_ingredient(ingredient: str, value: object) -> None:
    assert compile_key(**{**BASE, ingredient: value}) != compile_key(**BASE)


def test_key_changes_with_format_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = compile_key(**BASE)
    monkeypatch.setattr(
        compile_cache, "CACHE_FORMAT_VERSION", compile_cache.CACHE_FORMAT_VERSION + 1
    )
    assert compile_key(**BASE) != before


def test_key_is_stable() -> None:
    assert compile_key(**BASE) == compile_key(**dict(BASE))
    assert len(compile_key(**BASE)) == 64


def test_headers_digest_follows_header_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = tmp_path / "tessera" / "intrinsics.cuh"
    header.parent.mkdir()
    header.write_text("// v1\n")
    monkeypatch.setattr(toolchain, "_templates_include_dir", lambda: tmp_path)
    toolchain.headers_digest.cache_clear()
    try:
        first = toolchain.headers_digest()
        toolchain.headers_digest.cache_clear()
        header.write_text("// v2\n")
        assert toolchain.headers_digest() != first
    finally:
        toolchain.headers_digest.cache_clear()


def test_put_then_get_round_trips(tmp_path: Path) -> None:
    cache = CompileCache(root=tmp_path)
    cache.put("ab" * 32, _record())
    assert cache.get("ab" * 32) == _record()
    assert cache.get("cd" * 32) is None
    assert not list(tmp_path.rglob("*.tmp"))  # no temp file left behind


def test_corrupted_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    cache = CompileCache(root=tmp_path)
    key = "ab" * 32
    cache.put(key, _record())
    entry = json.loads(cache.path(key).read_text())
    entry["cubin_b64"] = entry["cubin_b64"][:-8] + "AAAAAAA="  # flipped bytes, bad checksum
    cache.path(key).write_text(json.dumps(entry))
    assert cache.get(key) is None
    assert not cache.path(key).exists()


def test_torn_entry_is_a_miss(tmp_path: Path) -> None:
    cache = CompileCache(root=tmp_path)
    key = "ef" * 32
    cache.put(key, _record())
    text = cache.path(key).read_text()
    cache.path(key).write_text(text[: len(text) // 2])
    assert cache.get(key) is None


def test_old_format_entry_is_a_miss(tmp_path: Path) -> None:
    cache = CompileCache(root=tmp_path)
    key = "12" * 32
    cache.put(key, _record())
    entry = json.loads(cache.path(key).read_text())
    entry["format"] = compile_cache.CACHE_FORMAT_VERSION - 1
    cache.path(key).write_text(json.dumps(entry))
    assert cache.get(key) is None


def _writer(root: str, key: str, rounds: int) -> None:
    cache = CompileCache(root=root)
    for _ in range(rounds):
        cache.put(key, _record("same"))


def test_concurrent_writers_leave_a_valid_entry(tmp_path: Path) -> None:
    key = "34" * 32
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(tmp_path), key, 20)) for _ in range(3)]
    for process in writers:
        process.start()
    reader = CompileCache(root=tmp_path)
    seen = []
    while any(p.is_alive() for p in writers):
        seen.append(reader.get(key))
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert all(record is None or record == _record("same") for record in seen)
    assert reader.get(key) == _record("same")
    assert not list(tmp_path.rglob("*.tmp"))
