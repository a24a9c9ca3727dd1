"""`python -m cache`: every subcommand runs, on real cache directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cache_workers import put_version

from cache import KernelCache
from cache.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["gemm.fp16.m64.n64.k64.sm_80", "gemm.fp16.m128.n64.k64.sm_80"]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "kernels"
    cache = KernelCache(cache_dir=path, read_only_dirs=())
    for key in KEYS:
        put_version(cache, key, "v1")
    return path


def test_ls_runs_as_a_module_and_prints_the_columns(filled: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cache", "--cache-dir", str(filled), "ls"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["key", "config", "time", "objective", "size", "last", "used"]
    assert sorted(r.split()[0] for r in rows) == sorted(KEYS)
    assert all("m64n64k32w4s2" in r and "time_ms=0.5" in r for r in rows)


def test_show_verify_prune_clear(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--cache-dir", str(filled)]
    assert main([*base, "show", KEYS[0]]) == 0
    assert '"version": "v1"' in capsys.readouterr().out
    assert main([*base, "show", "gemm.fp16.m1.n1.k1.sm_80"]) == 2
    assert "no cached kernel" in capsys.readouterr().err

    assert main([*base, "verify"]) == 0
    bad = filled / "v1" / "entries" / f"{KEYS[1]}.kernel"
    bad.write_bytes(bad.read_bytes()[:-3])
    assert main([*base, "verify"]) == 1
    assert f"BAD {KEYS[1]}" in capsys.readouterr().out
    assert not bad.exists()

    put_version(KernelCache(cache_dir=filled, read_only_dirs=()), KEYS[1], "v2")
    assert main([*base, "prune", "--max-entries", "1"]) == 0
    assert "1 entries evicted" in capsys.readouterr().out
    assert len(KernelCache(cache_dir=filled, read_only_dirs=()).list_keys()) == 1
    assert main([*base, "clear"]) == 0
    assert KernelCache(cache_dir=filled, read_only_dirs=()).list_keys() == []


def test_export_and_import(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b.tar.gz"
    assert main(["--cache-dir", str(filled), "export", str(bundle), "--all"]) == 0
    into = tmp_path / "into"
    assert (
        main(["--cache-dir", str(tmp_path / "unused"), "import", str(bundle), "--into", str(into)])
        == 0
    )
    assert "2 imported" in capsys.readouterr().out
    assert KernelCache(cache_dir=into, read_only_dirs=()).list_keys() == sorted(KEYS)
    bundle.write_bytes(b"junk")
    assert main(["--cache-dir", str(into), "import", str(bundle)]) == 2
    assert "refused" in capsys.readouterr().err


def test_prune_refuses_a_negative_limit(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--max-bytes", "--max-entries"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--cache-dir", str(filled), "prune", option, "-1"])
        assert exit_info.value.code == 2
        assert "expected an integer >= 0" in capsys.readouterr().err
    assert KernelCache(cache_dir=filled, read_only_dirs=()).list_keys() == sorted(KEYS)


def test_verify_says_when_a_bad_entry_could_not_be_quarantined(
    filled: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = filled / "v1" / "entries" / f"{KEYS[1]}.kernel"
    bad.write_bytes(bad.read_bytes()[:-3])
    monkeypatch.setattr("cache.inventory.quarantine", lambda *args: False)  # e.g. read-only fs
    assert main(["--cache-dir", str(filled), "verify"]) == 1
    out = capsys.readouterr().out
    assert "could not be quarantined" in out and "read-only layer" not in out


def test_verify_counts_a_bad_read_only_entry_as_bad_only(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = filled / "v1" / "entries" / f"{KEYS[1]}.kernel"
    bad.write_bytes(bad.read_bytes()[:-3])
    empty = tmp_path / "empty"
    assert main(["--cache-dir", str(empty), "--layer", str(filled), "verify"]) == 1
    out = capsys.readouterr().out
    assert "left in place (read-only layer)" in out and bad.exists()
    assert "1 entries ok, 1 bad" in out
