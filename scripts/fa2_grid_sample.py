"""A pytest plugin: a seeded sample of FlashAttention-2's slow grid, stratified by size.

    PYTHONPATH=scripts python -m pytest tests/runtime/test_fa2_grid.py -m slow -p no:randomly \\
        -p fa2_grid_sample --fa2-grid-scale 1.5 --junitxml=grid.xml
    python scripts/fa2_grid_summary.py grid.xml

The full grid (48,384 cells) takes about a day on the emulator; this keeps a cell when
sha256(node id) mod N == 0, with N growing with seq_q x seq_k so the largest pairs are
represented without dominating the run. `--fa2-grid-scale` multiplies every N (larger: fewer
cells). The same scale always keeps the same cells, whatever the order or the machine.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_SEQ = re.compile(r"seq=(\d+)x(\d+)")
# (largest seq_q x seq_k, keep 1 in N); anything larger: 1 in LARGEST_EVERY.
EVERY_BY_AREA: tuple[tuple[int, int], ...] = ((512 * 256, 24), (1024 * 1024, 96))
LARGEST_EVERY = 400


def every(nodeid: str, scale: float = 1.0) -> int:
    """Keep 1 cell in this many of `nodeid`'s size class (at least 1)."""
    match = _SEQ.search(nodeid)
    area = int(match.group(1)) * int(match.group(2)) if match else 0
    n = next((n for limit, n in EVERY_BY_AREA if area <= limit), LARGEST_EVERY)
    return max(1, int(n * scale))


def kept(nodeid: str, scale: float = 1.0) -> bool:
    digest = int(hashlib.sha256(nodeid.encode()).hexdigest()[:12], 16)
    return digest % every(nodeid, scale) == 0


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--fa2-grid-scale",
        type=float,
        default=1.0,
        help="multiply the sampling interval of every size class (default 1.0)",
    )


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    scale = config.getoption("--fa2-grid-scale")
    keep = [item for item in items if kept(item.nodeid, scale)]
    drop = [item for item in items if not kept(item.nodeid, scale)]
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
