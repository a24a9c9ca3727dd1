"""Runtime.attention_with_kvcache: tiers 1, 2 and 3 on the host emulator against float64, the
in-place append done once per call, signatures by cache-length bucket, one-line input errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autotune.hotspots import propose_tasks, tune_command
from cache.store import KernelCache
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig
from runtime.specialized import clear_memo
from runtime.tiers import Tier
from templates.attention_decode import space
from templates.attention_decode.reference import attention_decode_reference
from templates.registry import get_family
from tessera_core.types import AttentionDecodeProblem, TileConfig, parse_shape

ARCH = "sm_80"
TOLERANCE = 4e-3  # fp16: relative Frobenius error of O against float64
TUNED = space.tile(16, 32, 2, 2, 2)


def _inputs(seed: int, lengths: tuple[int, ...] = (20, 45)) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    batch, heads_q, heads_kv, d, page = len(lengths), 4, 2, 32, 16
    pages = 8 * batch

    def half(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16)

    return {
        "q": half(batch, 2, heads_q, d),
        "k_cache": half(pages, page, heads_kv, d),
        "v_cache": half(pages, page, heads_kv, d),
        "k": half(batch, 2, heads_kv, d),
        "v": half(batch, 2, heads_kv, d),
        "cache_seqlens": np.asarray(lengths, dtype=np.int32),
        "block_table": rng.permutation(pages).astype(np.int32).reshape(batch, 8),
    }


def _expected(inputs: dict[str, Any], **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 O and LSE, and the k cache after the append (on copies)."""
    k_cache, v_cache = inputs["k_cache"].copy(), inputs["v_cache"].copy()
    o, lse = attention_decode_reference(
        inputs["q"], k_cache, v_cache, cache_seqlens=inputs["cache_seqlens"], k=inputs["k"],
        v=inputs["v"], block_table=inputs["block_table"], **kwargs,
    )  # fmt: skip
    return o, lse, k_cache


def _call(rt: Runtime, inputs: dict[str, Any], **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    q, k_cache, v_cache = inputs["q"], inputs["k_cache"], inputs["v_cache"]
    rest = {n: inputs[n] for n in ("k", "v", "cache_seqlens", "block_table")}
    return rt.attention_with_kvcache(q, k_cache, v_cache, **rest, return_lse=True, **kwargs)  # type: ignore[no-any-return]


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got64 = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got64))
    return float(np.linalg.norm(got64 - want) / np.linalg.norm(want))


def _tuned_entry(cache_dir: Path, problem: AttentionDecodeProblem, config: TileConfig) -> None:
    KernelCache(cache_dir=cache_dir).put(
        problem.kernel_key(ARCH),
        cubin=b"placeholder",
        ptx=None,
        metadata={
            "arch": ARCH,
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "template_hash": template_hash(get_family(problem.op)),
        },
    )


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


def test_tiers_agree_with_float64_and_append_once(tmp_path: Path) -> None:
    config = RuntimeConfig(
        device="emulator", arch=ARCH, tier2_min_calls=1, tier3_min_calls=2, tuning_workers=0,
        cache_dirs=(tmp_path,),
    )  # fmt: skip
    problem = AttentionDecodeProblem(2, 4, 2, 64, 32, "fp16", True, heads_kv=2, page_size=16)
    _tuned_entry(tmp_path, problem, TUNED)
    with Runtime(config=config) as rt:
        for seed, tier in ((1, Tier.REFERENCE), (2, Tier.GENERIC), (3, Tier.SPECIALIZED)):
            inputs = _inputs(seed)
            want_o, want_lse, want_cache = _expected(inputs, causal=True)
            o, lse = _call(rt, inputs, causal=True)
            assert _rel_err(o, want_o) <= TOLERANCE, tier
            np.testing.assert_allclose(lse, want_lse, atol=1e-4)
            assert np.array_equal(inputs["k_cache"], want_cache), f"append at tier {tier}"
            assert rt.history()[-1].tier == tier
        assert rt.history()[-1].kernel_key == problem.kernel_key(ARCH)


def test_window_softcap_and_forced_splits_at_tier_2() -> None:
    config = RuntimeConfig(device="emulator", arch=ARCH, tier2_min_calls=0, tuning_workers=0)
    inputs = _inputs(4, lengths=(90, 7))
    want_o, want_lse, _ = _expected(inputs, window_size=(20, 3), softcap=4.0)
    with Runtime(config=config) as rt:
        o, lse = _call(rt, inputs, window_size=(20, 3), softcap=4.0, num_splits=3)
        assert rt.history()[-1].tier == Tier.GENERIC
    assert _rel_err(o, want_o) <= TOLERANCE
    np.testing.assert_allclose(lse, want_lse, atol=1e-4)


def test_alibi_at_every_tier_with_one_line_errors(tmp_path: Path) -> None:
    # Per-(batch, head) slopes under GQA 4:2, paged by 16, two new tokens, causal: tier 1, the
    # generic ALiBi kernel (its own key) and a tuned one, each against float64.
    config = RuntimeConfig(
        device="emulator", arch=ARCH, tier2_min_calls=1, tier3_min_calls=2, tuning_workers=0,
        cache_dirs=(tmp_path,),
    )  # fmt: skip
    problem = AttentionDecodeProblem(2, 4, 2, 64, 32, "fp16", True, heads_kv=2, page_size=16,
                                     alibi="batch_heads")  # fmt: skip
    _tuned_entry(tmp_path, problem, TUNED)
    with Runtime(config=config) as rt:
        for seed, tier in ((11, Tier.REFERENCE), (12, Tier.GENERIC), (13, Tier.SPECIALIZED)):
            inputs = _inputs(seed)
            slopes = (np.random.default_rng(seed).random((2, 4)) * 0.3).astype(np.float32)
            want_o, want_lse, want_cache = _expected(inputs, causal=True, alibi_slopes=slopes)
            plain, _, _ = _expected(inputs, causal=True)
            assert _rel_err(plain, want_o) > 10 * TOLERANCE  # the bias matters at this shape
            o, lse = _call(rt, inputs, causal=True, alibi_slopes=slopes)
            assert _rel_err(o, want_o) <= TOLERANCE, tier
            np.testing.assert_allclose(lse, want_lse, atol=1e-4)
            assert np.array_equal(inputs["k_cache"], want_cache), f"append at tier {tier}"
            assert rt.history()[-1].tier == tier
        keys = [r.kernel_key for r in rt.history() if r.event == "call"]
        assert keys[1:] == [problem.generic_key(ARCH), problem.kernel_key(ARCH)]
        assert keys[2].endswith(".alibi_batch_heads.sm_80")
        for bad, message in (
            (np.zeros(3, np.float32), r"alibi_slopes has shape \(3,\)"),
            (np.zeros(4, np.float64), "dtype float64"),
            ([0.1] * 4, "alibi_slopes is a list"),
            (np.full(4, np.nan, np.float32), "finite"),
        ):
            with pytest.raises(ValueError, match=message) as raised:
                _call(rt, _inputs(14), alibi_slopes=bad)
            assert "\n" not in str(raised.value)


def test_lengths_of_one_bucket_share_a_signature() -> None:
    config = RuntimeConfig(device="cpu", arch=ARCH, tier2=False, tier3=False)
    with Runtime(config=config) as rt:
        _call(rt, _inputs(5, lengths=(20, 45)))
        _call(rt, _inputs(6, lengths=(60, 3)))  # longest + 2 new = 62 <= 64
        _call(rt, _inputs(7, lengths=(70, 3)))  # 72: the next bucket, 128
        shapes = [r.shape for r in rt.history() if r.event == "call"]
    assert shapes[0] == shapes[1] == (2, 4, 2, 2, 64, 32, 16)
    assert shapes[2] == (2, 4, 2, 2, 128, 32, 16)


def test_a_contiguous_cache_and_an_int_length() -> None:
    rng = np.random.default_rng(8)
    q = rng.standard_normal((3, 1, 2, 16)).astype(np.float16)
    k_cache = rng.standard_normal((3, 40, 1, 16)).astype(np.float16)
    v_cache = rng.standard_normal((3, 40, 1, 16)).astype(np.float16)
    want, _ = attention_decode_reference(
        q, k_cache, v_cache, cache_seqlens=np.full(3, 33, dtype=np.int32)
    )
    config = RuntimeConfig(device="emulator", arch=ARCH, tier2_min_calls=0, tuning_workers=0)
    with Runtime(config=config) as rt:
        o = rt.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens=33)
        assert rt.history()[-1].tier == Tier.GENERIC
    assert _rel_err(o, want) <= TOLERANCE


BAD_CALLS = [
    ({"q": np.zeros((2, 1, 3, 32), np.float16)}, "heads_kv dividing heads_q"),
    ({"cache_seqlens": np.array([20, 45], np.int64)}, "cache_seqlens is int64"),
    ({"cache_seqlens": np.array([200, 1], np.int32)}, "cache holds 128"),
    ({"block_table": np.full((2, 8), 99, np.int32)}, "block_table names pages outside"),
    ({"k": None}, "k and v"),
    ({"window_size": (3,)}, "window_size"),
    ({"softcap": -1.0}, "softcap"),
    ({"num_splits": -2}, "num_splits"),
    ({"v_cache": np.zeros((16, 16, 2, 32), np.float32)}, "expected float16 or bfloat16"),
    (  # head_dim 24: a multiple of 8 that attention serves, but not of the decode mma's 16
        {
            "q": np.zeros((2, 2, 4, 24), np.float16),
            **{n: np.zeros((16, 16, 2, 24), np.float16) for n in ("k_cache", "v_cache")},
            **{n: np.zeros((2, 2, 2, 24), np.float16) for n in ("k", "v")},
        },
        "head_dim=24 is not supported by attention_with_kvcache",
    ),
]


@pytest.mark.parametrize("change,message", BAD_CALLS, ids=[m for _, m in BAD_CALLS])
def test_bad_inputs_are_one_line_errors(change: dict[str, Any], message: str) -> None:
    inputs = {**_inputs(9), **change}
    extra = {n: inputs.pop(n) for n in ("window_size", "softcap", "num_splits") if n in inputs}
    with (
        Runtime(config=RuntimeConfig(device="cpu", arch=ARCH, tier3=False)) as rt,
        pytest.raises(ValueError, match=message) as raised,
    ):
        _call(rt, inputs, **extra)
    assert "\n" not in str(raised.value)


def test_a_hot_decode_signature_becomes_a_tune_command_that_parses_back() -> None:
    config = RuntimeConfig(device="cpu", arch=ARCH, tier2=False, tier3=False)
    with Runtime(config=config) as rt:
        for seed in range(3):
            _call(rt, _inputs(seed), causal=True)
        (problem,) = propose_tasks(rt.hotspots(), 1)
    command = tune_command(problem).split()
    assert command[command.index("--op") + 1] == "attention_decode" and "--causal" in command
    shape = command[command.index("--shape") + 1]
    assert parse_shape("attention_decode", shape, causal=True) == problem
    assert problem.kernel_key(ARCH).startswith("attention_decode.fp16.b2.hq4.hkv2.sq2.kv64.")


def test_a_hot_alibi_decode_signature_tunes_with_its_slopes_form() -> None:
    config = RuntimeConfig(device="cpu", arch=ARCH, tier2=False, tier3=False)
    with Runtime(config=config) as rt:
        for seed in range(3):
            _call(rt, _inputs(seed), alibi_slopes=np.full(4, 0.1, np.float32))
        (problem,) = propose_tasks(rt.hotspots(), 1)
    assert isinstance(problem, AttentionDecodeProblem) and problem.alibi == "heads"
    command = tune_command(problem)
    assert command.endswith(" --alibi heads") and "--gqa" not in command


def test_one_generic_kernel_serves_a_second_shape_of_its_key() -> None:
    # The generic kernel is built for the key's first call; a later call of another batch,
    # head grouping and cache bucket must run on its own shape (not the first call's grid),
    # and a short cache gets no more splits than it has key tiles (the first call's 2 > 1).
    config = RuntimeConfig(device="emulator", arch=ARCH, tier2_min_calls=0, tuning_workers=0)
    rng = np.random.default_rng(9)
    with Runtime(config=config) as rt:
        for batch, heads_q, heads_kv, length in ((2, 2, 2, 100), (3, 4, 2, 170), (1, 2, 1, 10)):
            q = rng.standard_normal((batch, 1, heads_q, 32)).astype(np.float16)
            k_cache, v_cache = (
                rng.standard_normal((batch, 200, heads_kv, 32)).astype(np.float16) for _ in range(2)
            )
            lengths = np.full(batch, length, dtype=np.int32)
            want, _ = attention_decode_reference(q, k_cache, v_cache, cache_seqlens=lengths)
            o = rt.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens=lengths)
            assert rt.history()[-1].tier == Tier.GENERIC
            assert _rel_err(o, want) <= TOLERANCE
        keys = {r.kernel_key for r in rt.history() if r.event == "call"}
    assert len(keys) == 1
