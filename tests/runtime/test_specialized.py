"""load_specialized against real cache directories: layers, misses, metadata, the memo."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cache.store import KernelCache
from generator.render import template_hash
from runtime import load_specialized
from runtime.specialized import arch_of_key, clear_memo
from templates.registry import get_family
from tessera_core.errors import CacheMissError
from tessera_core.types import AttentionProblem, TileConfig

PROBLEM = AttentionProblem(1, 2, 64, 64, 64, dtype="fp16", causal=True)
KEY = PROBLEM.kernel_key("sm_80")
CONFIG = TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)


def _put(
    root: Path, *, config: dict[str, int] | None = None, cubin: bytes = b"\x7fELF-cubin"
) -> None:
    metadata = {
        "arch": "sm_80",
        "problem": PROBLEM.to_dict(),
        "kernel_name": "attention_fwd",
        "template_hash": template_hash(get_family("attention")),
    }
    metadata["config"] = config if config is not None else CONFIG.to_dict()
    KernelCache(cache_dir=root).put(KEY, cubin=cubin, ptx="// ptx", metadata=metadata)


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


def test_loads_config_metadata_and_binaries_from_a_read_only_layer(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    _put(shipped)
    kernel = load_specialized(KEY, cache_dirs=[tmp_path / "writable", shipped])
    assert kernel.config == CONFIG
    assert kernel.cubin == b"\x7fELF-cubin" and kernel.ptx == "// ptx"
    assert kernel.metadata["kernel_name"] == "attention_fwd" and kernel.problem == PROBLEM
    assert kernel.arch == "sm_80" and kernel.source == str(shipped)
    assert kernel.kernel is None  # no GPU of sm_80 here (gpu-marked tests cover the launch)


def test_miss_names_the_key_and_every_directory_searched(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(CacheMissError) as info:
        load_specialized(KEY, cache_dirs=dirs)
    message = str(info.value)
    assert KEY in message and str(dirs[0]) in message and str(dirs[1]) in message
    assert info.value.kernel_key == KEY


def test_default_layers_come_from_the_environment(cache_dir: Path) -> None:
    with pytest.raises(CacheMissError, match=str(cache_dir)):
        load_specialized(KEY)
    _put(cache_dir)
    assert load_specialized(KEY).config == CONFIG  # a miss is not memoized


def test_entry_without_a_valid_config_is_a_miss_with_the_reason(tmp_path: Path) -> None:
    _put(tmp_path, config={"block_m": 64})
    with pytest.raises(CacheMissError, match="no valid 'config'"):
        load_specialized(KEY, cache_dirs=[tmp_path])


def test_entry_built_from_another_template_is_stale(tmp_path: Path) -> None:
    KernelCache(cache_dir=tmp_path).put(
        KEY,
        cubin=b"old",
        ptx=None,
        metadata={"arch": "sm_80", "config": CONFIG.to_dict(), "template_hash": "0" * 64},
    )
    with pytest.raises(CacheMissError, match="built from template"):
        load_specialized(KEY, cache_dirs=[tmp_path])


def test_repeated_load_comes_from_the_memo(tmp_path: Path) -> None:
    _put(tmp_path)
    first = load_specialized(KEY, cache_dirs=[tmp_path])
    start = time.perf_counter()
    for _ in range(1000):
        again = load_specialized(KEY, cache_dirs=[tmp_path])
    per_call_s = (time.perf_counter() - start) / 1000
    assert again is first
    print(f"memoized load_specialized: {per_call_s * 1e6:.2f} us")  # reported, not asserted


def test_arch_is_read_from_the_key() -> None:
    assert arch_of_key(KEY) == "sm_80"
    assert arch_of_key("gemm.fp16.sm_90.generic") == "sm_90"
    with pytest.raises(ValueError, match="names no arch"):
        arch_of_key("gemm.fp16.m1.n1.k1")


def test_the_memo_never_serves_another_default_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cache_dirs=None means TESSERA_CACHE_DIR as it is now: a test (or notebook) that moves
    # it must not be answered from an entry the memo loaded out of the previous directory.
    _put(tmp_path / "first")
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "first"))
    assert load_specialized(KEY).source == str(tmp_path / "first")
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "second"))
    with pytest.raises(CacheMissError):
        load_specialized(KEY)
