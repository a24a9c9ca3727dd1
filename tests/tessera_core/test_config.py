from __future__ import annotations

import pytest

from tessera_core import config
from tessera_core.errors import KnobError


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
    with pytest.raises(ValueError, match="TESSERA_LOG_LEVEL='loud'"):
        config.configure_logging()
    monkeypatch.setenv("TESSERA_LOG_LEVEL", "WARNING")
    config.configure_logging()


def test_readme_knob_table_is_the_generated_one() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert config.knobs_markdown_table() in readme, "regenerate README's table of knobs"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("TESSERA_JOBS", "abc", "an integer >= 1"),
        ("TESSERA_JOBS", "0", "an integer >= 1"),
        ("TESSERA_CACHE_MAX_BYTES", "0", "an integer >= 1"),
        ("TESSERA_CACHE_MAX_BYTES", "-5", "an integer >= 1"),
        ("TESSERA_CACHE_MAX_ENTRIES", "0", "an integer >= 1"),
        ("TESSERA_CACHE_WRITE_DELAY_S", "-1", "a finite number >= 0"),
        ("TESSERA_CACHE_WRITE_DELAY_S", "nan", "a finite number >= 0"),
        ("TESSERA_CACHE_WRITE_DELAY_S", "inf", "a finite number >= 0"),
        ("TESSERA_ARCH", "sm_75", "one of sm_80, sm_86, sm_89, sm_90"),
        ("TESSERA_LOG_LEVEL", "bogus", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_malformed_knobs_are_one_line_naming_variable_and_form(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, expected: str
) -> None:
    monkeypatch.setenv(name, raw)
    (knob,) = [k for k in config.KNOBS if k.name == name]
    with pytest.raises(KnobError) as info:
        knob.get()
    message = str(info.value)
    assert f"{name}={raw!r}: expected {expected}" in message and "\n" not in message
    with pytest.raises(KnobError):
        config.check_knobs()


def test_choice_knobs_accept_any_case_and_return_the_listed_spelling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TESSERA_ARCH", "SM_80")
    monkeypatch.setenv("TESSERA_LOG_LEVEL", "info")
    assert config.ARCH.get() == "sm_80" and config.LOG_LEVEL.get() == "INFO"
    config.check_knobs()


def test_the_log_handler_follows_the_current_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import io
    import logging
    import sys

    config.configure_logging()
    earlier = io.StringIO()
    monkeypatch.setattr(sys, "stderr", earlier)
    logging.getLogger("tessera.test").warning("to the current stderr")
    assert "WARNING tessera.test: to the current stderr" in earlier.getvalue()
