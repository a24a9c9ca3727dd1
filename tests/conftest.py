"""Session-wide test setup: private cache directories (the GPU skip is in the root conftest)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch the user's caches. The compile cache is shared by the whole session so
# a kernel compiled by one test is a hit for the next (content-addressed: a hit or a miss gives
# the same result, only faster); kernel caches are per test (the autouse fixture below).
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tessera-tests-"))
os.environ.setdefault("TESSERA_COMPILE_CACHE_DIR", str(_SESSION_DIR / "compile"))
os.environ["TESSERA_CACHE_DIR"] = str(_SESSION_DIR / "kernels")
os.environ.pop("TESSERA_CACHE_PATH", None)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh writable kernel cache directory, set as TESSERA_CACHE_DIR for every test.

    Autouse: no test can find (or rely on) a kernel another test tuned into a shared default
    cache, whatever order the tests run in. Module-scoped fixtures pass their own directory.
    """
    path = tmp_path / "kernels"
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(path))
    return path
