"""`python -m generator.verify`: run kernels on the host emulator, check them against float64.

Tolerances, from the unit roundoff u of the output dtype (fp16: u = 2^-11, bf16: u = 2^-8): the
kernels accumulate in fp32, so the error that survives is the final rounding of each output
element (<= u relative) plus, for attention, the rounding of P to 16 bits before P*V (<= u
relative per probability). Both are normwise <= 2u; the tolerance of 4u on
||out - ref|| / ||ref|| leaves room for fp32 accumulation and fast_exp2, and an indexing, layout
or synchronisation bug moves the error to O(1). The max abs error is bounded by 8u * max|ref|.
LSE is fp32 throughout: max abs error 1e-3 (a mis-indexed row is off by O(1)).
The attention backward's dQ, dK and dV: normwise relative error at most 8u each
(generator.grad_check.GRAD_TOL_ULPS, which says why), every element finite.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from generator import attention_args, emulate_backward, emulator, toolchain
from templates.registry import get_family
from tessera_core import config as knobs
from tessera_core.cli import ArgumentParser, check_writable_dir, int_at_least, run_cli, seed_int
from tessera_core.config import configure_logging
from tessera_core.errors import (
    CompileError,
    EmulatorError,
    InvalidConfigError,
    TesseraError,
    UsageError,
)
from tessera_core.hardware import ARCHS
from tessera_core.types import (
    DTYPES,
    OPS,
    AttentionBackwardProblem,
    AttentionDecodeProblem,
    AttentionProblem,
    Problem,
    TileConfig,
    parse_shape,
)

UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}
REL_TOL_ULPS = 4.0
MAX_ABS_TOL_ULPS = 8.0
LSE_ABS_TOL = 1e-3
ALIBI_SLOPE_MAX = 0.3
PROG = "python -m generator.verify"
CONFIG_EXAMPLE = '{"block_m":64,"block_n":64,"block_k":16,"num_warps":4,"num_stages":2}'


@dataclass(frozen=True)
class Tolerance:
    """Acceptance bounds of one dtype."""

    rel: float  # on ||out - ref||_2 / ||ref||_2
    max_abs_factor: float  # max |out - ref| <= max_abs_factor * max |ref|

    @classmethod
    def of(cls, dtype: str) -> Tolerance:
        u = UNIT_ROUNDOFF[dtype]
        return cls(rel=REL_TOL_ULPS * u, max_abs_factor=MAX_ABS_TOL_ULPS * u)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one configuration."""

    config: TileConfig
    passed: bool
    rel_err: float
    max_abs_err: float
    detail: str
    compile_time_s: float = 0.0
    run_time_s: float = 0.0

    def line(self, problem: Problem) -> str:
        status = "PASS" if self.passed else "FAIL"
        numbers = (
            f"rel_err={self.rel_err:.2e} max_abs={self.max_abs_err:.2e}"
            if np.isfinite(self.rel_err)
            else "rel_err=nan"
        )
        return (
            f"{status} {problem.family} {problem.dtype} {problem.shape_str()}"
            f"{' causal' if getattr(problem, 'causal', False) else ''}"
            f"{attention_args.flags(problem)} {self.config} {numbers} "
            f"compile={self.compile_time_s:.2f}s run={self.run_time_s:.2f}s"
            + (f" {self.detail}" if self.detail else "")
        )


def random_inputs(problem: Problem, seed: int | np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh standard-normal inputs in the problem's dtype (never zeros: a kernel that ignores an
    operand cannot pass); `seed` may be a generator to draw from."""
    if isinstance(problem, AttentionBackwardProblem):
        from generator.grad_check import backward_inputs

        return backward_inputs(problem, seed)
    rng = np.random.default_rng(seed)
    dtype = emulator.NUMPY_DTYPES[problem.dtype]

    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    if isinstance(problem, AttentionDecodeProblem):
        from generator.emulate_decode import full_cache_inputs

        return full_cache_inputs(problem, rng)
    if isinstance(problem, AttentionProblem):
        from templates.attention.family import ALIBI_POINTER, tensor_shapes

        inputs: dict[str, np.ndarray] = {}
        totals = None
        if problem.varlen:  # ragged lengths up to the longest; sequence 0 is the longest
            for name, longest in (
                ("cu_seqlens_q", problem.seq_q),
                ("cu_seqlens_k", problem.seq_kv),
            ):
                lengths = rng.integers(1, longest + 1, problem.batch)
                lengths[0] = longest
                inputs[name] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            totals = (int(inputs["cu_seqlens_q"][-1]), int(inputs["cu_seqlens_k"][-1]))
        shapes = tensor_shapes(problem, totals=totals)
        inputs |= {name: draw(*shapes[name]) for name in ("q", "k", "v")}
        if ALIBI_POINTER in shapes:  # FA2's test slopes: uniform in [0, 0.3)
            inputs[ALIBI_POINTER] = (rng.random(shapes[ALIBI_POINTER]) * ALIBI_SLOPE_MAX).astype(
                np.float32
            )
        return inputs
    m, n, k = problem.m, problem.n, problem.k
    a_shape = (k, m) if problem.layout[0] == "t" else (m, k)
    b_shape = (n, k) if problem.layout[1] == "t" else (k, n)
    return {"a": draw(*a_shape), "b": draw(*b_shape)}


def reference(problem: Problem, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The family's NumPy reference, accumulated in float64."""
    if isinstance(problem, AttentionBackwardProblem):
        from generator.grad_check import reference_grads

        return reference_grads(problem, inputs)
    if isinstance(problem, AttentionDecodeProblem):
        from templates.attention_decode.reference import attention_decode_reference

        o, lse = attention_decode_reference(
            inputs["q"], inputs["k_cache"], inputs["v_cache"],
            cache_seqlens=inputs["cache_seqlens"],
            block_table=inputs["block_table"] if problem.page_size else None,
            causal=problem.causal, alibi_slopes=inputs.get("alibi_slopes"),
        )  # fmt: skip
        return {"o": o, "lse": lse}
    if isinstance(problem, AttentionProblem):
        from templates.attention.reference import attention_reference, attention_varlen_reference

        if problem.varlen:
            o, lse = attention_varlen_reference(
                inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"],
                inputs["cu_seqlens_k"], causal=problem.causal, accum_dtype=np.float64,
                window_size=(problem.window_left, problem.window_right), softcap=problem.softcap,
                alibi_slopes=inputs.get("alibi_slopes"), max_seqlen_k=problem.seq_kv,
            )  # fmt: skip
            return {"o": np.asarray(o, np.float64), "lse": np.asarray(lse, np.float64)}
        o, lse = attention_reference(
            inputs["q"], inputs["k"], inputs["v"], causal=problem.causal, accum_dtype=np.float64,
            window_size=(problem.window_left, problem.window_right), softcap=problem.softcap,
            alibi_slopes=inputs.get("alibi_slopes"), layout=problem.layout,
        )  # fmt: skip
        return {"o": np.asarray(o, np.float64), "lse": np.asarray(lse, np.float64)}
    from templates.gemm.reference import gemm_reference

    a = inputs["a"].T if problem.layout[0] == "t" else inputs["a"]
    b = inputs["b"].T if problem.layout[1] == "t" else inputs["b"]
    return {"c": np.asarray(gemm_reference(a, b, accum_dtype=np.float64))}


def compare(
    problem: Problem, outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> tuple[bool, float, float, str]:
    """(passed, rel_err, max_abs_err, reason) of the main output, plus LSE for attention."""
    if isinstance(problem, AttentionBackwardProblem):
        return _compare_grads(problem, outputs, expected)
    name = "o" if isinstance(problem, AttentionProblem) else "c"
    out = outputs[name].astype(np.float64)
    ref = expected[name]
    tol = Tolerance.of(problem.dtype)
    unwritten = int(np.count_nonzero(np.isnan(out) & ~np.isnan(ref)))
    if unwritten:
        return False, float("nan"), float("nan"), f"{unwritten} {name} elements NaN (unwritten?)"
    diff = np.abs(out - ref)
    ref_norm = float(np.linalg.norm(ref))
    rel = float(np.linalg.norm(out - ref)) / ref_norm if ref_norm else float(np.linalg.norm(out))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_abs_tol = tol.max_abs_factor * float(np.abs(ref).max() if ref.size else 0.0)
    reasons = []
    if rel > tol.rel:
        reasons.append(f"rel_err > {tol.rel:.1e}")
    if max_abs > max_abs_tol:
        reasons.append(f"max_abs > {max_abs_tol:.1e}")
    if isinstance(problem, AttentionProblem):
        lse, lse_ref = outputs["lse"].astype(np.float64), expected["lse"]
        with np.errstate(invalid="ignore"):  # -inf - -inf for rows that see no key
            lse_err = np.abs(lse - lse_ref)
        lse_err[np.isinf(lse_ref) & (lse == lse_ref)] = 0.0
        worst = float(np.nanmax(lse_err)) if not np.isnan(lse_err).any() else float("nan")
        if not worst <= LSE_ABS_TOL:
            reasons.append(f"lse max_abs={worst:.2e} > {LSE_ABS_TOL:.0e}")
    return not reasons, rel, max_abs, "; ".join(reasons)


def _compare_grads(
    problem: AttentionBackwardProblem,
    outputs: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
) -> tuple[bool, float, float, str]:
    """compare() for the backward: the worst of dQ, dK, dV (normwise, GRAD_TOL_ULPS * u)."""
    from generator.grad_check import GRAD_TOL_ULPS, GRADS, grad_errors_ulps

    errors = grad_errors_ulps(problem, outputs, expected)
    u = UNIT_ROUNDOFF[problem.dtype]
    worst = max(GRADS, key=lambda name: errors[name])
    max_abs = max(
        float(np.max(np.abs(outputs[n].astype(np.float64) - expected[n]), initial=0.0))
        for n in GRADS
    )
    reasons = [
        f"{n} rel_err={errors[n] * u:.2e} > {GRAD_TOL_ULPS * u:.1e}"
        if np.isfinite(errors[n])
        else f"{n} has NaN/inf elements (unwritten?)"
        for n in GRADS
        if not errors[n] <= GRAD_TOL_ULPS
    ]
    rel = errors[worst] * u if np.isfinite(errors[worst]) else float("nan")
    return not reasons, rel, max_abs, "; ".join(reasons)


def verify_config(
    problem: Problem, config: TileConfig, *, seed: int, arch: str, specialized: bool = False
) -> Verdict:
    """Run one configuration on fresh random inputs and compare with the reference."""
    inputs = random_inputs(problem, seed)
    try:
        if isinstance(problem, AttentionDecodeProblem):
            from generator.emulate_decode import verify_run

            run = verify_run(problem, inputs, config=config, specialized=specialized, arch=arch)
        elif isinstance(problem, AttentionBackwardProblem):
            run = emulate_backward.run_attention_backward_problem(
                problem, inputs, config=config, specialized=specialized, arch=arch
            )
        elif isinstance(problem, AttentionProblem):
            run = emulator.run_attention_problem(
                problem, inputs["q"], inputs["k"], inputs["v"], config=config,
                alibi_slopes=inputs.get("alibi_slopes"), specialized=specialized, arch=arch,
                cu_seqlens=(inputs["cu_seqlens_q"], inputs["cu_seqlens_k"])
                if problem.varlen
                else None,
            )  # fmt: skip
        else:
            run = emulator.run_gemm_problem(
                problem, inputs["a"], inputs["b"], config=config, specialized=specialized,
                arch=arch,
            )  # fmt: skip
    except (EmulatorError, CompileError) as exc:
        first = str(exc).splitlines()[0]
        return Verdict(config, False, float("nan"), float("nan"), f"{type(exc).__name__}: {first}")
    passed, rel, max_abs, reason = compare(problem, run.outputs, reference(problem, inputs))
    return Verdict(config, passed, rel, max_abs, reason, run.compile_time_s, run.run_time_s)


def verify(
    problem: Problem,
    configs: Sequence[TileConfig],
    *,
    seed: int,
    arch: str,
    specialized: bool = False,
    jobs: int = 1,
    report: Callable[[str], None] = print,
) -> list[Verdict]:
    """Verify each configuration, reporting one line per configuration in the given order.

    Configurations run in `jobs` threads: the host compiler runs as a subprocess and ctypes
    releases the GIL during a launch, and each configuration is its own library.
    """
    if jobs <= 1 or len(configs) <= 1:
        verdicts = []
        for config in configs:
            verdict = verify_config(problem, config, seed=seed, arch=arch, specialized=specialized)
            report(verdict.line(problem))
            verdicts.append(verdict)
        return verdicts
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(
                verify_config, problem, config, seed=seed, arch=arch, specialized=specialized
            )
            for config in configs
        ]
        verdicts = []
        for future in futures:
            verdicts.append(future.result())
            report(verdicts[-1].line(problem))
    return verdicts


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Run kernels on the CPU host emulator and compare with a float64 reference.",
    )
    parser.add_argument("--op", choices=(*OPS, "attention_decode"), required=True)
    parser.add_argument(
        "--shape",
        required=True,
        help="attention, attention_bwd BxHxSxD or BxHxSQxSKVxD; gemm MxNxK; attention_decode "
        "BxHQxHKVxSQxKVxD[xPAGE] (every sequence fills the KV bucket)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="fp16")
    parser.add_argument("--causal", action="store_true", help="causal attention")
    attention_args.add_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", help=f"a JSON object of tile fields, e.g. {CONFIG_EXAMPLE}")
    which.add_argument("--all-configs", action="store_true", help="every valid configuration")
    parser.add_argument("--seed", type=seed_int, default=0, help="input seed, 0 to 2**32-1")
    parser.add_argument(
        "--arch", choices=sorted(ARCHS), help="constraints of this arch (default: detected)"
    )
    parser.add_argument(
        "--specialized", action="store_true", help="sizes as compile-time constants"
    )
    parser.add_argument("--jobs", type=int_at_least(1), help="parallel host builds")
    return parser


def _config_argument(text: str) -> dict[str, Any]:
    """--config's JSON object; UsageError naming the expected form for anything else."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise UsageError(f"--config {text!r}: expected a JSON object, e.g. {CONFIG_EXAMPLE}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        problem = parse_shape(args.op, args.shape, dtype=args.dtype, causal=args.causal)
    except ValueError as exc:
        parser.error(f"--shape {args.shape}: {exc}")
    try:
        problem = attention_args.apply(problem, args)
    except ValueError as exc:
        parser.error(str(exc))
    arch = args.arch or toolchain.default_arch()
    family = get_family(problem.family)
    reason = family.space.unsupported(problem, arch)
    if reason is not None:
        raise UsageError(
            f"--shape {args.shape}: {problem.family} {problem.shape_str()} is not supported "
            f"on {arch}: {reason}"
        )
    if args.all_configs:
        configs = family.space.valid_configs(problem, arch)
        if not configs:
            raise UsageError(
                f"--shape {args.shape}: no valid {family.name} configuration for "
                f"{problem.shape_str()} on {arch}"
            )
    elif args.config:
        try:
            configs = [emulator.resolve_config(problem, _config_argument(args.config), arch=arch)]
        except InvalidConfigError as exc:
            raise UsageError(f"--config: {exc}") from None
    else:
        configs = [family.default_config(problem, arch)]
    check_writable_dir(
        knobs.default_compile_cache_dir(),
        argument="the compile cache directory (TESSERA_COMPILE_CACHE_DIR)",
    )
    jobs = args.jobs or knobs.default_jobs()
    try:
        verdicts = verify(
            problem, configs, seed=args.seed, arch=arch, specialized=args.specialized, jobs=jobs
        )
    except TesseraError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    failed = sum(not v.passed for v in verdicts)
    print(f"{len(verdicts) - failed}/{len(verdicts)} configurations passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
