from __future__ import annotations

import pytest

from tessera_core import config


def test_knob_reads_environment_with_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_JOBS", "3")
    assert config.JOBS.get() == 3
    assert config.default_jobs() == 3
    monkeypatch.delenv("TESSERA_JOBS")
    assert config.JOBS.get() is None


def test_bad_knob_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_CACHE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="TESSERA_CACHE_MAX_BYTES='lots'"):
        config.CACHE_MAX_BYTES.get()


def test_cache_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    assert config.default_cache_dir() == tmp_path


def test_knob_table_lists_every_knob() -> None:
    table = config.knobs_markdown_table()
    for knob in config.KNOBS:
        assert f"`{knob.name}`" in table


def test_no_module_outside_config_reads_environ() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("tessera_core", "generator", "templates", "autotune", "cache", "runtime"):
        for path in (root / package).rglob("*.py"):
            if path.name == "config.py" and path.parent.name == "tessera_core":
                continue
            text = path.read_text()
            if "os.environ" in text or "os.getenv" in text:
                offenders.append(str(path.relative_to(root)))
    assert not offenders, f"read knobs through tessera_core.config instead: {offenders}"


def test_log_level_knob_configures_the_tessera_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    monkeypatch.setenv("TESSERA_LOG_LEVEL", "debug")
    config.configure_logging()
    assert logging.getLogger("tessera").level == logging.DEBUG
    monkeypatch.setenv("TESSERA_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="TESSERA_LOG_LEVEL='LOUD'"):
        config.configure_logging()
    monkeypatch.setenv("TESSERA_LOG_LEVEL", "WARNING")
    config.configure_logging()


def test_readme_knob_table_is_the_generated_one() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert config.knobs_markdown_table() in readme, "regenerate README's table of knobs"
