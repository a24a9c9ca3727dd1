from __future__ import annotations

import argparse

import pytest

from tessera_core.cli import int_at_least


def test_int_at_least_accepts_the_bound_and_refuses_below_or_garbage() -> None:
    parse = int_at_least(1)
    assert parse("1") == 1 and parse("48") == 48
    for text in ("0", "-3", "two", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer >= 1"):
            parse(text)
    assert int_at_least(0)("0") == 0
