"""A bundle exported from one cache and imported into an empty one serves load_specialized hits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autotune.job import TuneRequest, run
from runtime.specialized import clear_memo, load_specialized
from tessera_core.errors import CacheMissError
from tessera_core.types import AttentionProblem, GemmProblem

ROOT = Path(__file__).resolve().parents[2]


def _cache_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cache", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_exported_bundle_serves_load_specialized_from_an_empty_cache(tmp_path: Path) -> None:
    source, target = tmp_path / "built", tmp_path / "shipped"
    problems = [AttentionProblem(1, 2, 80, 80, 64, causal=True), GemmProblem(40, 24, 56)]
    keys = []
    for problem in problems:
        request = TuneRequest(
            problem=problem, arch="sm_80", trials=1, jobs=1, cache_dir=source, progress=False
        )
        keys.append(run(request).kernel_key)
    bundle = tmp_path / "kernels.tar.gz"
    exported = _cache_cli("--cache-dir", str(source), "export", str(bundle), "--all")
    assert exported.returncode == 0, exported.stderr

    clear_memo()
    for key in keys:
        with pytest.raises(CacheMissError):
            load_specialized(key, cache_dirs=[target])
    imported = _cache_cli("import", str(bundle), "--into", str(target))
    assert imported.returncode == 0, imported.stderr

    for key in keys:
        kernel = load_specialized(key, cache_dirs=[target])
        original = load_specialized(key, cache_dirs=[source])
        assert kernel.cubin == original.cubin and kernel.cubin is not None
        assert kernel.config == original.config
        assert Path(kernel.source) == target
