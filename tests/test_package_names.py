"""Our top-level packages coexist with a user's own generic packages (issue: `core` shadowing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Names so common in applications that shipping a top-level package of that name would clash.
GENERIC_NAMES = {"core", "common", "utils", "util", "lib", "src", "app", "config", "helpers"}


def test_no_installed_top_level_package_has_a_generic_name() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"find = \{ include = \[([^\]]*)\]", text)
    assert include is not None, "pyproject.toml: no [tool.setuptools] packages.find.include"
    tops = {name.strip().strip('"').rstrip("*") for name in include.group(1).split(",")}
    assert "tessera_core" in tops
    assert not tops & GENERIC_NAMES, f"generic top-level package names: {tops & GENERIC_NAMES}"


def test_a_user_package_named_core_does_not_shadow_ours(tmp_path: Path) -> None:
    # A web app's own `core` package, first on sys.path, as when run from its project root.
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("USER_CORE = True\n")
    code = (
        "import core, generator.tune, runtime, cache, autotune.job;"
        "from runtime import Runtime;"
        "assert core.USER_CORE;"
        "print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
