from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tessera_core.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ArgumentParser,
    check_writable_dir,
    int_at_least,
    number_at_least,
    run_cli,
    seed_int,
)
from tessera_core.errors import KnobError, UsageError


def test_int_at_least_accepts_the_bound_and_refuses_below_or_garbage() -> None:
    parse = int_at_least(1)
    assert parse("1") == 1 and parse("48") == 48
    for text in ("0", "-3", "two", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer >= 1"):
            parse(text)
    assert int_at_least(0)("0") == 0


def _main_raising(exc: BaseException) -> Callable[[Sequence[str] | None], int]:
    def main(argv: Sequence[str] | None) -> int:
        raise exc

    return main


def test_parser_errors_are_one_line_with_exit_status_2(capsys: pytest.CaptureFixture) -> None:
    parser = ArgumentParser(prog="prog")
    parser.add_argument("--n", type=int_at_least(1), required=True)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "0"])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "prog: error: argument --n: '0': expected an integer >= 1 (see --help)\n"


@pytest.mark.parametrize(
    ("exc", "status", "stderr"),
    [
        (UsageError("--shape 1x2: expected BxHxSxD\n  - more"), 2, "p: error: --shape 1x2: "
         "expected BxHxSxD; more\n"),
        (KnobError("environment variable TESSERA_JOBS='x': expected an integer"), 2,
         "p: error: environment variable TESSERA_JOBS='x': expected an integer\n"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "p: interrupted\n"),
        (BrokenPipeError(32, "Broken pipe"), EXIT_BROKEN_PIPE, ""),
    ],
)  # fmt: skip
def test_run_cli_turns_each_ending_into_a_status_and_at_most_one_line(
    exc: BaseException, status: int, stderr: str, capsys: pytest.CaptureFixture
) -> None:
    assert run_cli(_main_raising(exc), [], prog="p") == status
    assert capsys.readouterr().err == stderr


def test_run_cli_checks_every_knob_before_main_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    ran: list[bool] = []
    monkeypatch.setenv("TESSERA_CACHE_MAX_BYTES", "-1")
    assert run_cli(lambda argv: ran.append(True) or 0, [], prog="p") == EXIT_USAGE
    assert not ran
    assert "TESSERA_CACHE_MAX_BYTES='-1': expected an integer >= 1" in capsys.readouterr().err
    monkeypatch.delenv("TESSERA_CACHE_MAX_BYTES")
    assert run_cli(lambda argv: 7, [], prog="p") == 7


def test_int_at_least_with_an_upper_bound_and_number_at_least() -> None:
    assert seed_int("0") == 0 and seed_int(str(2**32 - 1)) == 2**32 - 1
    for text in ("-1", str(2**32)):
        with pytest.raises(argparse.ArgumentTypeError, match=r"<= 4294967295"):
            seed_int(text)
    positive = number_at_least(0, strict=True)
    assert positive("0.5") == 0.5
    for text in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="a finite number > 0"):
            positive(text)
    assert number_at_least(0)("0") == 0.0


def test_check_writable_dir_creates_it_or_names_the_argument(tmp_path: Path) -> None:
    check_writable_dir(tmp_path / "a" / "b", argument="--cache-dir")
    assert (tmp_path / "a" / "b").is_dir() and not any((tmp_path / "a" / "b").iterdir())
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match=r"^--cache-dir .*file/sub: cannot create or write it"):
        check_writable_dir(blocker / "sub", argument="--cache-dir")
