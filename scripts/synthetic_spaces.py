"""Synthetic tile spaces for held-out checks of the search strategy (CSV files for replay).

Usage: python scripts/synthetic_spaces.py OUT_DIR [--seeds 1 2 3 4]

Each space is a convolution-like grid (block_size_x 16..256 step 16, block_size_y 1..16 in
powers of two, tile sizes 1..4, three flags) with the real kernel's thread and shared-memory
limits as its invalid region and 3% of the valid configurations failed (empty time). Its log
time is a random smooth landscape: a bowl around a random point of the grid (interior or
edge, unlike the recorded spaces whose optima sit on edges), random pairwise interactions
and a few random waves. `align-N` adds the cliff of GPUs: a block_size_x that is not a
multiple of 32 costs up to 2x, and tile size 3 costs 1.3x. Seeds fix everything, so the
files are the same on every machine.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
from pathlib import Path

import numpy as np

CHOICES = {
    "block_size_x": tuple(range(16, 257, 16)),
    "block_size_y": (1, 2, 4, 8, 16),
    "tile_size_x": (1, 2, 3, 4),
    "tile_size_y": (1, 2, 3, 4),
    "read_only": (0, 1),
    "use_shmem": (0, 1),
    "use_padding": (0, 1),
}
FAILED_FRACTION = 0.03
MEDIAN_LOG_SLOWDOWN = math.log(8.0)


def _valid(p: dict[str, int]) -> bool:
    if p["block_size_x"] * p["block_size_y"] > 1024:
        return False
    if p["use_padding"] and not p["use_shmem"]:
        return False
    tile = (p["block_size_x"] * p["tile_size_x"] + 14) * (p["block_size_y"] * p["tile_size_y"] + 14)
    return not (p["use_shmem"] and tile >= 12 * 1024)


def landscape(seed: int, *, aligned: bool) -> list[tuple[dict[str, int], float | None]]:
    """Every valid configuration with its time in ms (None: failed)."""
    rng = np.random.default_rng(seed)
    names = list(CHOICES)
    points = [dict(zip(names, v, strict=True)) for v in itertools.product(*CHOICES.values())]
    points = [p for p in points if _valid(p)]

    def position(p: dict[str, int]) -> np.ndarray:
        x = [math.log(p[n]) / math.log(max(CHOICES[n])) if n.startswith("b") else 0 for n in names]
        for j, n in enumerate(names):
            if not n.startswith("b"):
                x[j] = (p[n] - min(CHOICES[n])) / (max(CHOICES[n]) - min(CHOICES[n]))
        return np.asarray(x, dtype=np.float64)

    xs = np.asarray([position(p) for p in points])
    centre = rng.random(len(names))
    weight = rng.uniform(0.5, 3.0, len(names))
    pairs = rng.normal(0.0, 0.8, (len(names), len(names)))
    waves = rng.normal(0.0, 1.0, (4, len(names))) * 3.0
    phase = rng.uniform(0, 2 * math.pi, 4)
    d = xs - centre
    log_t = (weight * d * d).sum(1) * 2.0
    log_t += np.einsum("ni,ij,nj->n", d, np.triu(pairs, 1), d)
    log_t += 0.25 * np.sin(xs @ waves.T + phase).sum(1)
    if aligned:
        bx = np.asarray([p["block_size_x"] for p in points])
        tx = np.asarray([p["tile_size_x"] for p in points])
        log_t += np.where(bx % 32 != 0, rng.uniform(0.3, 0.7), 0.0)
        log_t += np.where(tx == 3, math.log(1.3), 0.0)
    failed = rng.random(len(points)) < FAILED_FRACTION
    # Scaled so the median configuration is exp(MEDIAN_LOG_SLOWDOWN) slower than the optimum,
    # between the recorded spaces' 3x (A4000) and 30x (W6600).
    log_t -= log_t.min()
    times = np.exp(log_t * MEDIAN_LOG_SLOWDOWN / np.median(log_t))
    return [
        (p, None if fail else float(t)) for p, t, fail in zip(points, times, failed, strict=True)
    ]


def write(path: Path, rows: list[tuple[dict[str, int], float | None]]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*CHOICES, "time"])
        for p, t in rows:
            out.writerow([*p.values(), "" if t is None else f"{t:.6g}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for kind in ("smooth", "align"):
            path = args.out_dir / f"synthetic_{kind}-{seed}.csv"
            write(path, landscape(seed, aligned=kind == "align"))
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
