"""FlashAttention-2's test grid, run on the emulator through the public Runtime API.

Each cell (fa2_grid.py) calls `Runtime.attention`, `attention_varlen` or
`attention_with_kvcache` with FA2's keyword names and is judged by FA2's rule (fa2_reference.py):
max|ours - float64| <= 2 x max|low-precision twin - float64| + 1e-5 (3x, or 5x with ALiBi, for the
KV cache, as FA2's test_flash_attn_kvcache). A cell runs, or is skipped with the runtime's own
reason: a missing method or keyword, or a ValueError the runtime raised before it ran anything
(nothing traced). Once a branch teaches the runtime a variant, its cells run with no edit here.

The CI sample covers every axis value; the full grid (`-m slow`, tens of thousands of cells) is
expanded only when the run selects slow tests, so the default run does not pay for collecting
it. `python scripts/fa2_grid_summary.py JUNIT_XML` counts a run's outcomes per axis and reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from _pytest.mark.expression import Expression
from fa2_grid import (
    FORWARD_SAMPLE,
    KVCACHE_SAMPLE,
    VARLEN_SAMPLE,
    Cell,
    full_forward_grid,
    full_kvcache_grid,
    full_varlen_grid,
)
from fa2_runner import run_forward, run_kvcache, run_varlen

from runtime import Runtime, RuntimeConfig


@pytest.fixture(scope="module")
def rt() -> Iterator[Runtime]:
    """The emulated kernel (tier 2) from the first call, no tuning, and no silent fallback."""
    config = RuntimeConfig(
        device="emulator",
        arch="sm_80",
        tier2_min_calls=0,
        tier3=False,
        tier1_fallback=False,
        tuning_workers=0,
    )
    with Runtime(config=config) as runtime:
        yield runtime


# -- the CI sample -------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", FORWARD_SAMPLE, ids=lambda c: c.id)
def test_fa2_forward_sample(rt: Runtime, cell: Cell) -> None:
    run_forward(rt, cell)


@pytest.mark.parametrize("cell", VARLEN_SAMPLE, ids=lambda c: c.id)
def test_fa2_varlen_sample(rt: Runtime, cell: Cell) -> None:
    run_varlen(rt, cell)


@pytest.mark.parametrize("cell", KVCACHE_SAMPLE, ids=lambda c: c.id)
def test_fa2_kvcache_sample(rt: Runtime, cell: Cell) -> None:
    run_kvcache(rt, cell)


# -- the full grid (-m slow) ---------------------------------------------------------------------
_FULL_GRIDS: dict[str, Callable[[], Iterator[Cell]]] = {
    "test_fa2_forward_full": full_forward_grid,
    "test_fa2_varlen_full": full_varlen_grid,
    "test_fa2_kvcache_full": full_kvcache_grid,
}


def _slow_selected(config: pytest.Config) -> bool:
    """Whether the run's -m expression keeps a test marked only `slow` (pytest's own matcher)."""
    markexpr = config.getoption("markexpr") or ""
    return not markexpr or Expression.compile(markexpr).evaluate(lambda name, **_: name == "slow")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    grid = _FULL_GRIDS.get(metafunc.function.__name__)
    if grid is not None:
        cells = list(grid()) if _slow_selected(metafunc.config) else []
        metafunc.parametrize("cell", cells, ids=[c.id for c in cells])


@pytest.mark.slow
def test_fa2_forward_full(rt: Runtime, cell: Cell) -> None:
    run_forward(rt, cell)


@pytest.mark.slow
def test_fa2_varlen_full(rt: Runtime, cell: Cell) -> None:
    run_varlen(rt, cell)


@pytest.mark.slow
def test_fa2_kvcache_full(rt: Runtime, cell: Cell) -> None:
    run_kvcache(rt, cell)
