"""FlashAttention-2's test grid (tests/test_flash_attn.py) as data: its axes, cells and CI sample.

Facts carried over from FA2's parametrizations: the seqlen pairs, head dims, causal, local
windows (both sides drawn from [0, seqlen_k)), softcap 0/50 (q scaled by the cap), ALiBi slopes
U[0, 0.3) per (batch, head), MHA/MQA/GQA, fp16/bf16, varlen lengths drawn from
[max(1, L - 20), L], and flash_attn_with_kvcache's cache lengths, new k/v and paged blocks
(pages drawn from a random permutation of 3x the blocks needed). Dropout, determinism and
rotary embeddings are axes of FA2 that this runtime has no counterpart of, so they are left
out. Batch and heads are smaller than FA2's (4 and 6) so that the emulator runs a cell in
seconds; every other size is FA2's.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from fa2_reference import DTYPES, Variant

# -- the axes --------------------------------------------------------------------------------
SEQLEN_PAIRS: tuple[tuple[int, int], ...] = (
    (113, 203), (128, 217), (113, 211), (108, 256), (256, 512),
    (512, 256), (1024, 1024), (1023, 1024), (1024, 1023), (2048, 2048),
)  # fmt: skip
VARLEN_SEQLEN_PAIRS: tuple[tuple[int, int], ...] = ((1, 147), *SEQLEN_PAIRS)
KVCACHE_SEQLEN_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 128), (1, 339), (3, 1024), (64, 800), (64, 256), (3, 799),
    (64, 2048), (16, 20000), (1, 128 * 1024), (16, 128 * 1024), (128, 128),
)  # fmt: skip
HEAD_DIMS: tuple[int, ...] = (32, 40, 59, 64, 80, 96, 111, 128, 160, 192, 224, 256)
KVCACHE_HEAD_DIMS: tuple[int, ...] = (32, 59, 64, 80, 128, 256)
CAUSAL: tuple[bool, ...] = (False, True)
LOCAL: tuple[bool, ...] = (False, True)
SOFTCAPS: tuple[float, ...] = (0.0, 50.0)
ALIBI: tuple[bool, ...] = (False, True)
DTYPE_NAMES: tuple[str, ...] = ("fp16", "bf16")
# (heads_q, heads_kv) per FA2 mha_type; FA2 uses 6 query heads and 1 (mqa) or 2 (gqa) KV heads.
HEAD_LAYOUTS: dict[str, tuple[int, int]] = {"mha": (2, 2), "mqa": (2, 1), "gqa": (4, 2)}
NEW_KV: tuple[bool, ...] = (False, True)
PAGED_KV_BLOCK_SIZES: tuple[int | None, ...] = (None, 256)
# flash_attn_func's [batch, seq, heads, d] ("bshd") and the runtime's native [batch, heads, seq, d].
LAYOUTS: tuple[str, ...] = ("bhsd", "bshd")
KINDS = ("fwd", "varlen", "kvcache")

ALIBI_SLOPE_MAX = 0.3  # FA2: torch.rand(batch, nheads) * 0.3
VARLEN_SPREAD = 20  # FA2's "random" padding mode: lengths in [max(1, L - 20), L]
PAGE_OVERSUPPLY = 3  # FA2's _generate_block_kvcache: 3x the blocks a batch needs
SMALL_CELL_SCORES = 256 * 512  # cells up to this many scores per head run with batch 2


@dataclass(frozen=True)
class Cell:
    """One point of FA2's grid; `id` names every axis as key=value (scripts/fa2_grid_summary.py
    counts outcomes per axis from it)."""

    kind: str = "fwd"
    dtype: str = "fp16"
    heads: str = "mha"
    d: int = 64
    seq_q: int = 113
    seq_k: int = 203
    causal: bool = False
    local: bool = False
    softcap: float = 0.0
    alibi: bool = False
    new_kv: bool = False  # kvcache only: append seq_q new keys and values in place
    page: int | None = None  # kvcache only: paged KV block size (None: a contiguous cache)
    layout: str = "bhsd"  # fwd only: how q, k, v and o are stored (LAYOUTS)

    @property
    def id(self) -> str:
        parts = [
            f"dtype={self.dtype}",
            f"heads={self.heads}",
            f"d={self.d}",
            f"seq={self.seq_q}x{self.seq_k}",
            f"causal={int(self.causal)}",
            f"local={int(self.local)}",
            f"softcap={self.softcap:g}",
            f"alibi={int(self.alibi)}",
        ]
        if self.kind == "kvcache":
            parts += [f"new_kv={int(self.new_kv)}", f"page={self.page}"]
        if self.kind == "fwd":
            parts.append(f"layout={self.layout}")
        return "-".join(parts)

    @property
    def heads_q(self) -> int:
        return HEAD_LAYOUTS[self.heads][0]

    @property
    def heads_kv(self) -> int:
        return HEAD_LAYOUTS[self.heads][1]

    @property
    def batch(self) -> int:
        if self.kind == "kvcache":
            return 2  # FA2's batch for the KV cache test
        return 2 if self.seq_q * self.seq_k <= SMALL_CELL_SCORES else 1

    def rng(self) -> np.random.Generator:
        """A generator seeded by the cell alone: a cell draws the same inputs in any run order."""
        return np.random.default_rng(zlib.crc32(f"{self.kind}:{self.id}".encode()))

    def variant(self, rng: np.random.Generator) -> Variant:
        """The call's keywords; a local cell draws both window sides from [0, seq_k) as FA2."""
        window = (-1, -1)
        if self.local:
            left, right = rng.integers(0, self.seq_k, size=2)
            window = (int(left), int(right))
        return Variant(causal=self.causal, window=window, softcap=self.softcap)


def normals(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32).astype(DTYPES[dtype])


def query(cell: Cell, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Q as FA2 draws it: standard normal, times the cap under softcap (scores reach its range)."""
    q = normals(rng, shape, cell.dtype)
    if cell.softcap > 0:
        q = (q.astype(np.float32) * np.float32(cell.softcap)).astype(DTYPES[cell.dtype])
    return q


def alibi_slopes(cell: Cell, rng: np.random.Generator) -> np.ndarray | None:
    """float32 [batch, heads_q] slopes drawn from U[0, 0.3), or None."""
    if not cell.alibi:
        return None
    return (rng.random((cell.batch, cell.heads_q), dtype=np.float32) * ALIBI_SLOPE_MAX).astype(
        np.float32
    )


def varlen_lengths(rng: np.random.Generator, max_len: int, batch: int) -> np.ndarray:
    """Per-sequence lengths drawn from [max(1, L - 20), L] (FA2's 'random' padding mode)."""
    return rng.integers(max(1, max_len - VARLEN_SPREAD), max_len + 1, size=batch)


def cu_seqlens(lengths: np.ndarray) -> np.ndarray:
    """int32 [batch + 1] prefix sums: sequence b is rows cu[b]:cu[b + 1] of the packed tensor."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def page_table(rng: np.random.Generator, seq_k: int, page: int, batch: int) -> np.ndarray:
    """int32 [batch, blocks]: a random permutation of 3x the blocks needed, split per batch."""
    blocks = math.ceil(seq_k / page) * batch * PAGE_OVERSUPPLY
    return rng.permutation(blocks).astype(np.int32).reshape(batch, -1)


# -- the full grids (behind the slow marker) ---------------------------------------------------
def full_forward_grid() -> Iterator[Cell]:
    for dtype, heads, d, (sq, sk), causal, local, softcap, alibi, layout in itertools.product(
        DTYPE_NAMES, HEAD_LAYOUTS, HEAD_DIMS, SEQLEN_PAIRS, CAUSAL, LOCAL, SOFTCAPS, ALIBI, LAYOUTS
    ):
        yield Cell("fwd", dtype, heads, d, sq, sk, causal, local, softcap, alibi, layout=layout)


def full_varlen_grid() -> Iterator[Cell]:
    for dtype, heads, d, (sq, sk), causal, local, softcap, alibi in itertools.product(
        DTYPE_NAMES, HEAD_LAYOUTS, HEAD_DIMS, VARLEN_SEQLEN_PAIRS, CAUSAL, LOCAL, SOFTCAPS, ALIBI
    ):
        yield Cell("varlen", dtype, heads, d, sq, sk, causal, local, softcap, alibi)


def full_kvcache_grid() -> Iterator[Cell]:
    for dtype, heads, d, (sq, sk), causal, local, alibi, new_kv, page in itertools.product(
        DTYPE_NAMES,
        HEAD_LAYOUTS,
        KVCACHE_HEAD_DIMS,
        KVCACHE_SEQLEN_PAIRS,
        CAUSAL,
        LOCAL,
        ALIBI,
        NEW_KV,
        PAGED_KV_BLOCK_SIZES,
    ):
        yield Cell("kvcache", dtype, heads, d, sq, sk, causal, local, 0.0, alibi, new_kv, page)


# -- the CI sample -----------------------------------------------------------------------------
# Every value of every axis at least once, around one base cell, with small seqlen pairs; cells
# share variants and head dims so that the emulator compiles few distinct kernels. The head
# dims are those of FA2's own KV cache test, the largest subset FA2 itself samples.
_FWD = Cell()
FORWARD_SAMPLE: tuple[Cell, ...] = (
    _FWD,
    replace(_FWD, seq_q=128, seq_k=217),
    replace(_FWD, seq_q=113, seq_k=211, causal=True),
    replace(_FWD, seq_q=108, seq_k=256, causal=True),
    replace(_FWD, seq_q=512, seq_k=256, causal=True),  # rows above the diagonal see no key
    replace(_FWD, seq_q=256, seq_k=512),
    replace(_FWD, d=32, dtype="bf16"),
    replace(_FWD, d=59),
    replace(_FWD, d=80, dtype="bf16", causal=True),
    replace(_FWD, d=128, dtype="bf16", causal=True),
    replace(_FWD, d=256),
    replace(_FWD, local=True),
    replace(_FWD, local=True, causal=True, alibi=True, seq_q=128, seq_k=217),
    replace(_FWD, softcap=50.0),
    replace(_FWD, alibi=True),
    replace(_FWD, heads="mqa"),
    replace(_FWD, heads="gqa"),
    # FA2's own layout with whole K/V tiles (a whole-tile copy with bhsd's row stride read
    # other heads' rows in bshd), and a head dim the mmas pad (40 to 48: the padding columns
    # of whole Q and K tiles must be zero-filled).
    replace(_FWD, layout="bshd", heads="gqa", seq_q=256, seq_k=512, causal=True),
    replace(_FWD, d=40, dtype="bf16", seq_q=256, seq_k=512, local=True, softcap=50.0),
    replace(
        _FWD, heads="gqa", d=128, dtype="bf16", causal=True, local=True, softcap=50.0, alibi=True
    ),
)
# Cells today's runtime supported when this grid was written: refusing one is a regression.
FORWARD_BASELINE: frozenset[Cell] = frozenset(
    cell
    for cell in FORWARD_SAMPLE
    if cell.heads == "mha"
    and cell.d in (32, 64, 80, 128)
    and cell.layout == "bhsd"
    and not (cell.local or cell.softcap or cell.alibi)
)
_VARLEN = Cell("varlen")
VARLEN_SAMPLE: tuple[Cell, ...] = (
    _VARLEN,
    replace(_VARLEN, seq_q=1, seq_k=147, causal=True),
    replace(_VARLEN, heads="gqa", seq_q=128, seq_k=217, causal=True, local=True),
    replace(_VARLEN, dtype="bf16", heads="mqa", d=128, softcap=50.0, alibi=True),
)
_KVCACHE = Cell("kvcache", seq_q=1, seq_k=128)
KVCACHE_SAMPLE: tuple[Cell, ...] = (
    _KVCACHE,
    replace(_KVCACHE, seq_q=1, seq_k=339, heads="gqa", new_kv=True),
    replace(_KVCACHE, seq_q=64, seq_k=256, causal=True, new_kv=True, page=256),
    replace(_KVCACHE, seq_q=3, seq_k=799, heads="mqa", dtype="bf16", local=True, alibi=True),
    # ALiBi against a paged cache with an append, causal, GQA (FA2's alibi axis on its paged
    # path: per-(batch, head) slopes, each sequence's own cache length).
    replace(
        _KVCACHE, seq_q=1, seq_k=339, heads="gqa", causal=True, alibi=True, new_kv=True, page=256
    ),
)
