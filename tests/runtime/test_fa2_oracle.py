"""The FA2 grid's own oracle: its masks are FA2's documented ones, its pass rule rejects planted
defects, and its three cell runners drive a runtime end to end (a NumPy fake here, so that the
varlen and KV cache paths are exercised before the runtime has them)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from fa2_grid import (
    FORWARD_BASELINE,
    FORWARD_SAMPLE,
    KVCACHE_SAMPLE,
    VARLEN_SAMPLE,
    Cell,
    alibi_slopes,
    normals,
    query,
)
from fa2_reference import (
    DTYPES,
    Variant,
    alibi_bias,
    attention64,
    attention_low_precision,
    judge,
    visible,
)
from fa2_runner import FORWARD_MULTIPLE, run_forward, run_kvcache, run_varlen


def test_causal_mask_is_fa2s_documented_bottom_right_one() -> None:
    # flash_attn_func's docstring: seqlen_q=2, seqlen_k=5 and seqlen_q=5, seqlen_k=2.
    assert visible(2, 5, Variant(causal=True)).astype(int).tolist() == [
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ]
    assert visible(5, 2, Variant(causal=True)).astype(int).tolist() == [
        [0, 0], [0, 0], [0, 0], [1, 0], [1, 1],
    ]  # fmt: skip


def test_window_is_inclusive_and_combines_with_causal() -> None:
    # Row i sees [i + sk - sq - left, i + sk - sq + right] inclusive; causal makes right 0.
    seen = visible(3, 6, Variant(window=(1, 1)))
    assert [np.flatnonzero(row).tolist() for row in seen] == [[2, 3, 4], [3, 4, 5], [4, 5]]
    seen = visible(3, 6, Variant(window=(1, 1), causal=True))
    assert [np.flatnonzero(row).tolist() for row in seen] == [[2, 3], [3, 4], [4, 5]]
    assert visible(3, 6, Variant(window=(-1, -1))).all()


def test_alibi_bias_is_minus_slope_times_distance_to_the_diagonal() -> None:
    bias = alibi_bias(np.array([0.5]), 2, 4)  # off = 2: row 0's diagonal is key 2
    assert bias[0].tolist() == [[-1.0, -0.5, 0.0, -0.5], [-1.5, -1.0, -0.5, 0.0]]


def test_a_row_that_sees_no_key_outputs_zero() -> None:
    rng = np.random.default_rng(0)
    q, k, v = (normals(rng, (1, 1, s, 16), "fp16") for s in (5, 2, 2))
    for reference in (attention64, attention_low_precision):
        o = np.asarray(reference(q, k, v, Variant(causal=True)), dtype=np.float64)
        assert np.all(o[0, 0, :3] == 0) and np.all(o[0, 0, 3:] != 0)


# -- the pass rule has teeth ---------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A forward problem and its FA2 variant, built as the grid builds a cell."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    variant: Variant
    slopes: np.ndarray | None


def _case(cell: Cell) -> Case:
    rng = cell.rng()
    variant = cell.variant(rng)
    q = query(cell, rng, (cell.batch, cell.heads_q, cell.seq_q, cell.d))
    k, v = (normals(rng, (cell.batch, cell.heads_kv, cell.seq_k, cell.d), cell.dtype) for _ in "kv")
    return Case(q, k, v, variant, alibi_slopes(cell, rng))


def _planted(defect: str, c: Case) -> np.ndarray:
    """The float64 output of `c` with one classic attention bug planted."""
    variant, k, v, slopes = c.variant, c.k, c.v, c.slopes
    if defect == "window_left_off_by_one":
        variant = replace(variant, window=(variant.window[0] + 1, variant.window[1]))
    elif defect == "causal_top_left_aligned":  # row i sees keys <= i instead of <= i + off
        k, v = k[:, :, : c.q.shape[2]], v[:, :, : c.q.shape[2]]
    elif defect == "gqa_head_mapping":  # query head h reads KV head h % heads_kv, not h // group
        group = c.q.shape[1] // k.shape[1]
        k, v = np.tile(k, (1, group, 1, 1)), np.tile(v, (1, group, 1, 1))
    elif defect == "softcap_ignored":
        variant = replace(variant, softcap=0.0)
    elif defect == "alibi_sign_flipped":
        assert slopes is not None
        slopes = -slopes
    return attention64(c.q, k, v, variant, slopes)


DEFECT_CELLS = {
    "window_left_off_by_one": Cell(local=True, seq_q=64, seq_k=96),
    "causal_top_left_aligned": Cell(causal=True, seq_q=64, seq_k=96),
    "gqa_head_mapping": Cell(heads="gqa", seq_q=64, seq_k=96),
    "softcap_ignored": Cell(softcap=50.0, seq_q=64, seq_k=96),
    "alibi_sign_flipped": Cell(alibi=True, seq_q=64, seq_k=96, dtype="bf16"),
}


@pytest.mark.parametrize("defect", sorted(DEFECT_CELLS))
def test_rule_passes_a_correct_output_and_rejects_a_planted_defect(defect: str) -> None:
    cell = DEFECT_CELLS[defect]
    case = _case(cell)
    want = attention64(case.q, case.k, case.v, case.variant, case.slopes)
    low = attention_low_precision(case.q, case.k, case.v, case.variant, case.slopes)
    dtype = DTYPES[cell.dtype]
    correct = judge(want.astype(dtype), low, want, multiple=FORWARD_MULTIPLE)
    assert correct.passed and correct.low_precision_err > correct.ours_err > 0, correct.explain()
    planted = judge(_planted(defect, case).astype(dtype), low, want, multiple=FORWARD_MULTIPLE)
    assert not planted.passed, planted.explain()


def test_non_finite_output_fails_the_rule() -> None:
    want = np.zeros((2, 2))
    assert not judge(np.full((2, 2), np.nan), want, want, multiple=2).passed


# -- the runners, end to end on a fake runtime -----------------------------------------------------
@dataclass
class _Record:
    event: str = "call"
    tier: int = 2
    detail: str = ""


@dataclass
class _Stats:
    total_calls: int
    failed_calls: int = 0


class FakeFA2Runtime:
    """FA2's three calls in NumPy (float64 math, rounded to the dtype), with FA2's keyword
    names; `defect` plants one bug in it."""

    def __init__(self, defect: str = "") -> None:
        self.defect = defect
        self.calls = 0

    def stats(self) -> _Stats:
        return _Stats(total_calls=self.calls)

    def history(self) -> list[_Record]:
        return [_Record()]

    def attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        causal: bool = False,
        *,
        window_size: tuple[int, int] = (-1, -1),
        softcap: float = 0.0,
        alibi_slopes: Any = None,
    ) -> np.ndarray:
        self.calls += 1
        variant = Variant(causal=causal, window=window_size, softcap=softcap)
        return attention64(q, k, v, variant, alibi_slopes).astype(q.dtype)

    def _one(self, i: int, q: Any, k: Any, v: Any, causal: bool, kw: dict[str, Any]) -> Any:
        """Sequence i alone ([seq, heads, d] each) through `attention`, as [seq, heads, d]."""
        slopes = kw.get("alibi_slopes")
        step = {**kw, "alibi_slopes": None if slopes is None else slopes[i : i + 1]}
        q, k, v = (np.swapaxes(x, 0, 1)[None] for x in (q, k, v))
        return np.swapaxes(self.attention(q, k, v, causal, **step)[0], 0, 1)

    def attention_varlen(
        self,
        q: Any,
        k: Any,
        v: Any,
        *,
        cu_seqlens_q: Any,
        cu_seqlens_k: Any,
        max_seqlen_q: int,
        max_seqlen_k: int,
        causal: bool = False,
        **kw: Any,
    ) -> np.ndarray:
        cq, ck = cu_seqlens_q, cu_seqlens_k
        return np.concatenate(
            [
                self._one(
                    i, q[cq[i] : cq[i + 1]], k[ck[i] : ck[i + 1]], v[ck[i] : ck[i + 1]], causal, kw
                )
                for i in range(len(cq) - 1)
            ]
        )

    def attention_with_kvcache(
        self,
        q: Any,
        k_cache: Any,
        v_cache: Any,
        k: Any = None,
        v: Any = None,
        *,
        cache_seqlens: Any,
        block_table: Any = None,
        causal: bool = False,
        **kw: Any,
    ) -> np.ndarray:
        b, sq = q.shape[:2]
        if block_table is None:  # a contiguous cache is one page per sequence
            block_table = np.arange(b)[:, None]
        elif self.defect == "block_table_ignored":
            block_table = np.arange(block_table.size).reshape(block_table.shape)
        page = k_cache.shape[1]
        outs = []
        for i in range(b):
            start = int(cache_seqlens[i])
            if k is not None:
                if self.defect != "no_append":
                    for t in range(sq):
                        blk, row = block_table[i][(start + t) // page], (start + t) % page
                        k_cache[blk, row], v_cache[blk, row] = k[i, t], v[i, t]
                start += sq
            keys, values = (
                c[block_table[i]].reshape(-1, *c.shape[2:])[:start] for c in (k_cache, v_cache)
            )
            outs.append(self._one(i, q[i], keys, values, causal, kw)[None])
        return np.concatenate(outs)


def test_forward_runner_passes_a_correct_runtime_on_every_variant() -> None:
    fake = FakeFA2Runtime()
    for cell in DEFECT_CELLS.values():
        run_forward(fake, cell)  # type: ignore[arg-type]
    assert fake.calls == len(DEFECT_CELLS)


@pytest.mark.parametrize("cell", VARLEN_SAMPLE, ids=lambda c: c.id)
def test_varlen_runner_passes_a_correct_runtime(cell: Cell) -> None:
    fake = FakeFA2Runtime()
    run_varlen(fake, cell)  # type: ignore[arg-type]
    assert fake.calls == cell.batch  # one attention per packed sequence


@pytest.mark.parametrize("cell", KVCACHE_SAMPLE, ids=lambda c: c.id)
def test_kvcache_runner_passes_a_correct_runtime(cell: Cell) -> None:
    run_kvcache(FakeFA2Runtime(), cell)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("defect", "cell"),
    [
        ("block_table_ignored", Cell("kvcache", seq_q=4, seq_k=600, page=256)),
        ("no_append", Cell("kvcache", seq_q=4, seq_k=300, new_kv=True)),
    ],
)
def test_kvcache_runner_catches_a_planted_defect(defect: str, cell: Cell) -> None:
    with pytest.raises(AssertionError):
        run_kvcache(FakeFA2Runtime(defect), cell)  # type: ignore[arg-type]


def test_a_runtime_without_a_call_skips_with_its_reason() -> None:
    with pytest.raises(pytest.skip.Exception, match="no attention_varlen"):
        run_varlen(object(), VARLEN_SAMPLE[0])  # type: ignore[arg-type]


class _Refusing(FakeFA2Runtime):
    """Raises a ValueError from `attention`, before (refusal) or after (a failed run) tracing."""

    def __init__(self, *, traced: bool) -> None:
        super().__init__()
        self.traced = traced

    def attention(self, q: Any, k: Any, v: Any, causal: bool = False, **kw: Any) -> np.ndarray:
        self.calls += self.traced
        raise ValueError("q, k, v head_dim=64 is not supported")


def test_a_refusal_skips_a_new_cell_but_fails_a_baseline_one() -> None:
    with pytest.raises(pytest.skip.Exception, match="refuses it: q, k, v head_dim=64"):
        run_forward(_Refusing(traced=False), replace(FORWARD_SAMPLE[0], heads="gqa"))  # type: ignore[arg-type]
    assert FORWARD_SAMPLE[0] in FORWARD_BASELINE
    with pytest.raises(pytest.fail.Exception, match="supported when the grid was written"):
        run_forward(_Refusing(traced=False), FORWARD_SAMPLE[0])  # type: ignore[arg-type]


def test_a_value_error_after_the_call_was_traced_is_a_failure_not_a_skip() -> None:
    with pytest.raises(ValueError, match="not supported"):
        run_forward(_Refusing(traced=True), replace(FORWARD_SAMPLE[0], heads="gqa"))  # type: ignore[arg-type]
