"""NaN and Inf in the inputs propagate the same way through tiers 1, 2 and 3 (emulator) and torch.

The semantics are PyTorch's CPU SDPA (templates/attention/reference.py says them): a NaN among a
row's visible scores makes its O and LSE NaN; a +inf score makes O NaN and LSE +inf; -inf
scores weigh 0 (a row of only -inf scores gets O = 0, LSE = -inf); NaN/Inf in V reach the O
columns of the rows that weigh that key. A masked key's 0 * NaN is unspecified (PyTorch's own
backends differ on it), so those positions are not compared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cache.store import KernelCache
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig
from runtime.specialized import clear_memo
from templates.attention.reference import attention_reference
from templates.gemm.reference import gemm_reference
from templates.registry import get_family
from tessera_core.types import AttentionProblem, GemmProblem, Problem, TileConfig

ARCH = "sm_80"  # a GPU machine of another arch never tries to launch the placeholder cubin
SHAPE = (1, 2, 64, 64)  # the shape of test_emulator_tiers: its kernels are compile-cache hits
SCALE = 0.2
TUNED = TileConfig(
    block_m=64, block_n=32, block_k=16, num_warps=4, num_stages=2, options=(("q_in_regs", 1),)
)
O_REL_TOL = 4e-3  # fp16: a few output roundings, on the finite elements
LSE_ABS_TOL = 1e-3

Inputs = tuple[np.ndarray, np.ndarray, np.ndarray]


def _base_inputs() -> Inputs:
    # Small scores (|s| << 1): no probability underflows to 0 in fp16, so a key's Inf in V
    # reaches every row that weighs it (0 * inf would be NaN) in every tier.
    rng = np.random.default_rng(11)
    return tuple(  # type: ignore[return-value]
        (0.5 * rng.standard_normal(SHAPE)).astype(np.float16) for _ in range(3)
    )


def _set(tensor: int, index: tuple[int, ...], value: float) -> Callable[[Inputs], None]:
    def plant(inputs: Inputs) -> None:
        inputs[tensor][index] = value

    return plant


def _row_of_only_neg_inf_scores(inputs: Inputs) -> None:
    q, k, _ = inputs
    k[0, 0, :, 0] = np.abs(k[0, 0, :, 0]) + np.float16(0.1)  # every key positive in dim 0 ...
    q[0, 0, 3, 0] = -np.inf  # ... so every score of row 3 is -inf: it sees no key


Q, K, V = 0, 1, 2
CASES: dict[str, Callable[[Inputs], None]] = {
    "nan_q": _set(Q, (0, 0, 5, 3), np.nan),
    "nan_k": _set(K, (0, 1, 7, 0), np.nan),
    "nan_v": _set(V, (0, 0, 9, 2), np.nan),
    "posinf_q": _set(Q, (0, 1, 10, 0), np.inf),
    "neginf_q": _set(Q, (0, 1, 12, 5), -np.inf),
    "posinf_k": _set(K, (0, 0, 4, 1), np.inf),
    "neginf_k": _set(K, (0, 1, 20, 6), -np.inf),
    "posinf_v": _set(V, (0, 1, 6, 4), np.inf),
    "neginf_v": _set(V, (0, 0, 30, 7), -np.inf),
    "neginf_row": _row_of_only_neg_inf_scores,
}
# The kernel writes LSE = -inf whenever the row's softmax denominator is not > 0, so a NaN
# denominator (a NaN or +inf score) gives -inf where PyTorch and tier 1 give NaN or +inf.


def _problem(causal: bool) -> AttentionProblem:
    b, h, s, d = SHAPE
    return AttentionProblem(b, h, s, s, d, dtype="fp16", causal=causal)


def _tuned_entry(cache_dir: Path, problem: Problem, config: TileConfig) -> None:
    """What a finished tuning job leaves behind; the emulator needs only the config."""
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


def _tier_config(tier: int, cache_dir: Path) -> RuntimeConfig:
    """A runtime that runs every call at `tier` (tier 3 needs the tuned entry in cache_dir)."""
    return RuntimeConfig(
        device="emulator",
        arch=ARCH,
        tier2=tier == 2,
        tier3=tier == 3,
        tier2_min_calls=0,
        tier3_min_calls=0,
        tuning_workers=0,
        cache_dirs=(cache_dir,),
    )


def _run_tiers(cache_dir: Path, calls: list[Callable[[Runtime], Any]]) -> dict[int, list[Any]]:
    """Every call through each tier; asserts the tier each actually ran at."""
    clear_memo()
    results = {}
    for tier in (1, 2, 3):
        with Runtime(config=_tier_config(tier, cache_dir)) as rt:
            results[tier] = [call(rt) for call in calls]
            assert {r.tier for r in rt.history() if r.event == "call"} == {tier}
    return results


@pytest.fixture(scope="module", params=[False, True], ids=["noncausal", "causal"])
def attention_outputs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[bool, dict[int, dict[str, tuple[Any, Any]]]]:
    causal: bool = request.param
    cache_dir = tmp_path_factory.mktemp("kernels")
    _tuned_entry(cache_dir, _problem(causal), TUNED)
    inputs = {}
    for name, plant in CASES.items():
        case = tuple(x.copy() for x in _base_inputs())
        plant(case)  # type: ignore[arg-type]
        inputs[name] = case

    def call(case: Inputs) -> Callable[[Runtime], Any]:
        return lambda rt: rt.attention(*case, causal=causal, scale=SCALE, return_lse=True)

    by_tier = _run_tiers(cache_dir, [call(inputs[name]) for name in CASES])
    return causal, {tier: dict(zip(CASES, outs, strict=True)) for tier, outs in by_tier.items()}


def _unspecified_rows(name: str, causal: bool) -> np.ndarray:
    """Rows of the O output not compared: those that do not see a V key holding NaN/Inf."""
    rows = np.zeros(SHAPE[:3], dtype=bool)
    if causal and name.endswith("_v"):
        key = {"nan_v": 9, "posinf_v": 6, "neginf_v": 30}[name]
        rows[..., :key] = True  # a row i sees keys j <= i
    return rows


def _assert_same_specials(got: Any, want: Any, what: str, *, rel_tol: float | None) -> None:
    got64 = np.asarray(got, dtype=np.float64)
    want64 = np.asarray(want, dtype=np.float64)
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        where_got, where_want = np.argwhere(test(got64)), np.argwhere(test(want64))
        assert np.array_equal(where_got, where_want), (
            f"{what}: {name} at {where_got.tolist()[:8]} ({len(where_got)}), "
            f"tier 1 at {where_want.tolist()[:8]} ({len(where_want)})"
        )
    finite = np.isfinite(want64)
    assert finite.any(), f"{what}: nothing finite left to compare"
    diff = got64[finite] - want64[finite]
    if rel_tol is None:  # LSE: absolute
        assert np.abs(diff).max() <= LSE_ABS_TOL, f"{what}: max abs err {np.abs(diff).max()}"
    else:
        rel = np.linalg.norm(diff) / np.linalg.norm(want64[finite])
        assert rel <= rel_tol, f"{what}: relative error {rel:.2e} > {rel_tol}"


def test_the_planted_values_reach_tier_1_as_pytorch_defines(
    attention_outputs: tuple[bool, dict[int, dict[str, tuple[Any, Any]]]],
) -> None:
    _, outputs = attention_outputs
    o, lse = outputs[1]["nan_q"]
    assert np.isnan(o[0, 0, 5]).all() and np.isnan(lse[0, 0, 5])
    assert np.isfinite(np.delete(o[0, 0], 5, axis=0)).all()
    o, lse = outputs[1]["posinf_q"]
    assert np.isnan(o[0, 1, 10]).all() and lse[0, 1, 10] == np.inf
    o, lse = outputs[1]["neginf_row"]
    assert (o[0, 0, 3] == 0).all() and lse[0, 0, 3] == -np.inf
    o, _ = outputs[1]["posinf_v"]
    assert (o[0, 1, 6:, 4] == np.inf).all()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("tier", [2, 3])
def test_output_specials_agree_with_tier_1(
    attention_outputs: tuple[bool, dict[int, dict[str, tuple[Any, Any]]]], name: str, tier: int
) -> None:
    causal, outputs = attention_outputs
    got, want = outputs[tier][name][0], outputs[1][name][0]
    skip = _unspecified_rows(name, causal)
    got, want = np.where(skip[..., None], 0, got), np.where(skip[..., None], 0, want)
    _assert_same_specials(got, want, f"tier {tier} O", rel_tol=O_REL_TOL)


@pytest.mark.parametrize(
    "name",
    sorted(CASES),
)
@pytest.mark.parametrize("tier", [2, 3])
def test_lse_specials_agree_with_tier_1(
    attention_outputs: tuple[bool, dict[int, dict[str, tuple[Any, Any]]]], name: str, tier: int
) -> None:
    _, outputs = attention_outputs
    _assert_same_specials(outputs[tier][name][1], outputs[1][name][1], f"tier {tier} LSE",
                          rel_tol=None)  # fmt: skip


@pytest.mark.parametrize(
    ("planted", "value"),
    [(("a", (5, 3)), np.nan), (("b", (7, 0)), np.inf), (("a", (2, 9)), -np.inf)],
)
def test_gemm_specials_agree_across_tiers(
    tmp_path: Path, planted: tuple[str, tuple[int, int]], value: float
) -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 32)).astype(np.float16)
    b = rng.standard_normal((32, 64)).astype(np.float16)
    name, index = planted
    {"a": a, "b": b}[name][index] = value
    _tuned_entry(
        tmp_path,
        GemmProblem(64, 64, 32),
        TileConfig(block_m=32, block_n=32, block_k=32, num_warps=4, num_stages=2),
    )
    by_tier = _run_tiers(tmp_path, [lambda rt: rt.gemm(a, b)])
    want = gemm_reference(a, b, accum_dtype=np.float64)
    assert not np.isfinite(want).all()
    for tier, (c,) in by_tier.items():
        _assert_same_specials(c, want, f"gemm tier {tier}", rel_tol=O_REL_TOL)


def test_tier_1_matches_torch_cpu_sdpa_on_every_planted_value() -> None:
    torch = pytest.importorskip("torch")
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    for causal in (False, True):
        for name, plant in CASES.items():
            case = tuple(x.astype(np.float32) for x in _base_inputs())
            plant(case)  # type: ignore[arg-type]
            o, lse = attention_reference(*case, causal=causal, scale=SCALE, block_kv=16)
            t_o, t_lse = flash(*(torch.from_numpy(x) for x in case), is_causal=causal,
                               scale=SCALE)[:2]  # fmt: skip
            what = f"{name} causal={causal}"
            _assert_same_specials(o, t_o.numpy(), f"{what} O", rel_tol=1e-5)
            if name != "neginf_row":  # torch's flash SDPA writes LSE 0 for a row that sees
                # no key (its O is 0, as here); this project's convention is -inf
                _assert_same_specials(lse, t_lse.numpy(), f"{what} LSE", rel_tol=None)
