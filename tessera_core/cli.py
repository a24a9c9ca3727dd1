"""The plumbing every command-line entry point shares: argument types, one-line errors, exit codes.

A CLI builds its parser with `ArgumentParser` and ends with `sys.exit(run_cli(main, prog=...))`.
Then a malformed argument or TESSERA_* variable is one line on stderr naming it and the expected
form, with exit status 2; Ctrl-C is one line and 130; a closed stdout (`... | head -1`) ends
the command quietly with 141; never a traceback for any of them.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from tessera_core.config import check_knobs
from tessera_core.errors import KnobError, UsageError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # a malformed or unusable argument or environment variable
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


def one_line(message: object) -> str:
    """`message` with its lines joined by '; ' (bullets of a listed reason dropped), so an
    error never spans lines."""
    lines = [line.strip().removeprefix("- ") for line in str(message).splitlines()]
    return "; ".join(line for line in lines if line).replace(":; ", ": ")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`prog: error: ... (see --help)`) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def int_at_least(low: int, *, at_most: int | None = None) -> Callable[[str], int]:
    """An argparse `type=` accepting integers in [low, at_most]; the error names the form."""
    form = f"an integer >= {low}" + ("" if at_most is None else f" and <= {at_most}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (at_most is not None and value > at_most):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {form}")
        return value

    return parse


# Search seeds feed numpy's legacy RandomState (Optuna's TPE), which takes 0 <= seed < 2**32.
seed_int = int_at_least(0, at_most=2**32 - 1)


def number_at_least(low: float, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse `type=` accepting finite numbers >= low (> low when `strict`)."""
    form = f"a finite number {'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {form}")
        return value

    return parse


def check_writable_dir(path: Path, *, argument: str) -> None:
    """Create `path` if needed and prove a file can be written in it, before any work starts.

    Raises:
        UsageError: naming `argument`, the path and the OS's reason.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".tessera-write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"{argument} {path}: cannot create or write it ({reason}); pass a writable directory"
        ) from None


def ignore_interrupts() -> None:
    """For worker processes: Ctrl-C reaches the whole process group, but only the parent
    reports it (as one line); a worker must not print its own KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


def run_cli(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    *,
    prog: str,
) -> int:
    """Run a CLI's `main` with the shared handling; returns the exit status for sys.exit.

    Every TESSERA_* variable is checked first. `KnobError` and `UsageError` become one line
    and status 2, Ctrl-C one line and 130, a broken stdout pipe a quiet 141.
    """
    try:
        check_knobs()
        status = main(argv)
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's exit
        return status
    except (KnobError, UsageError) as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
