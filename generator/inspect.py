"""`python -m generator.inspect`: compile one kernel and show its resources and SASS opcode mix.

Like Triton's `n_regs` / `n_spills` / `asm`: registers, shared memory, spills and stack from
ptxas, and the SASS opcode histogram of the whole kernel and of its main loop. The main loop
is found in the SASS as the body of the backward branch (`BRA` to a lower address) holding the
most tensor MMAs (HMMA, HGMMA, QGMMA), the innermost such loop on a tie (generator.sass.main_loop).
The family is the one serving the problem on the arch (templates.registry.select): on sm_90a
the Hopper families, whose SASS shows HGMMA, UTMALDG and SYNCS. A partial `--config`
is completed from the family's valid configurations: the valid one agreeing with every given
field that is closest to the family's default (sum of |log2| differences over the fields;
ties go to the space's own order), so the same input always gives the same kernel.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tessera_core.cli import ArgumentParser, run_cli
from tessera_core.errors import InvalidConfigError, TesseraError
from tessera_core.hardware import ARCHS
from tessera_core.types import GEMM_DTYPES, OPS, SHAPE_FORMS, Problem, TileConfig, parse_shape

EXIT_USAGE = 2
TOP_OPCODES = 25  # rows of each printed histogram (--json has them all)


def _distance(config: TileConfig, default: TileConfig) -> float:
    ours, theirs = config.to_dict(), default.to_dict()
    total = 0.0
    for name, value in ours.items():
        other = theirs.get(name, value)
        total += abs(math.log2(max(value, 1) / max(other, 1)))
    return total


def complete_config(
    family: Any, problem: Problem, arch: str, given: Mapping[str, int]
) -> tuple[TileConfig, bool]:
    """(the configuration `given` names or completes to, whether it was completed).

    Raises:
        InvalidConfigError: a complete `given` is invalid, or no valid configuration agrees
            with a partial one; the message lists the rules broken.
    """
    space = family.space
    names = [p.name for p in space.params]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InvalidConfigError(
            f"--config: {', '.join(unknown)} not a tunable of {family.name}; "
            f"expected some of {', '.join(names)}"
        )
    default = family.default_config(problem, arch)
    required = {p.name for p in space.params if p.default is None}
    if set(given) >= required:  # params with a default may be left out (TileConfig options)
        config = TileConfig.from_dict(given)
        reasons = space.violations(config, problem, arch)
        if reasons:
            raise InvalidConfigError(f"--config {config} is invalid: {'; '.join(reasons)}")
        return config, False
    matching = [
        c
        for c in space.valid_configs(problem, arch)
        if all(c.to_dict().get(name) == value for name, value in given.items())
    ]
    if not matching:
        filled = TileConfig.from_dict({**default.to_dict(), **given})
        reasons = space.violations(filled, problem, arch) or ["no valid point has these values"]
        raise InvalidConfigError(
            f"--config {json.dumps(dict(given), sort_keys=True)}: no valid {family.name} "
            f"configuration for {problem.shape_str()} on {arch} agrees; e.g. {filled}: "
            + "; ".join(reasons)
        )
    best = min(enumerate(matching), key=lambda ic: (_distance(ic[1], default), ic[0]))[1]
    return best, True


def _parse_config(text: str | None) -> dict[str, int]:
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidConfigError(f"--config {text!r}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in data.values()
    ):
        raise InvalidConfigError(
            f"--config {text!r}: expected a JSON object of integers, "
            'e.g. \'{"block_m": 128, "block_n": 64, "num_warps": 4}\''
        )
    return data


def inspect_kernel(
    problem: Problem, arch: str, given: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Compile `problem`'s kernel for the (completed) configuration and describe it."""
    from generator import sass
    from generator.compile import compile_kernel
    from generator.render import render
    from templates.registry import select

    selection = select(problem, arch)  # sm_90a: the Hopper family when it takes the problem
    family = selection.family
    given = dict(given or {})
    if given:
        config, completed = complete_config(family, problem, arch, given)
    else:
        config, completed = family.default_config(problem, arch), False
    compiled = compile_kernel(render(family, problem, config, arch=arch), arch=arch)
    res = compiled.resources
    dynamic = family.smem_bytes(problem, config)
    report: dict[str, Any] = {
        "kernel_name": compiled.kernel_name,
        "family": family.name,
        "fallback_reason": selection.fallback_reason,
        "problem": problem.to_dict(),
        "arch": arch,
        "nvrtc_version": compiled.nvrtc_version,
        "config": config.to_dict(),
        "completed_from": given if completed else None,
        "registers": res.registers,
        "smem_bytes": res.static_smem_bytes + dynamic,
        "static_smem_bytes": res.static_smem_bytes,
        "dynamic_smem_bytes": dynamic,
        "spill_bytes": res.spill_bytes,
        "spill_store_bytes": res.spill_store_bytes,
        "spill_load_bytes": res.spill_load_bytes,
        "stack_bytes": res.stack_bytes,
    }
    try:
        listing = sass.disassemble(compiled.cubin)
    except TesseraError as exc:
        report.update(
            sass_counts=None, sass_base_counts=None, main_loop_sass_counts=None, sass_error=str(exc)
        )
        return report
    report["sass_counts"] = sass.opcode_counts(listing)
    # Base mnemonics too: HGMMA, QGMMA, UTMALDG, SYNCS whatever their modifiers.
    base: dict[str, int] = {}
    for opcode, count in report["sass_counts"].items():
        base[opcode.split(".", 1)[0]] = base.get(opcode.split(".", 1)[0], 0) + count
    report["sass_base_counts"] = base
    report["main_loop_sass_counts"] = sass.opcode_counts(
        "\n".join(f"/*{a:04x}*/ {op} {rest};" for a, op, rest in sass.main_loop(listing))
    )
    return report


def _histogram_lines(title: str, counts: Mapping[str, int] | None) -> list[str]:
    if counts is None:
        return [f"{title}: unavailable"]
    total = sum(counts.values())
    lines = [f"{title}: {total} instructions"]
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    for opcode, count in ranked[:TOP_OPCODES]:
        lines.append(f"  {count:>6}  {opcode}")
    if len(ranked) > TOP_OPCODES:
        lines.append(f"  ... {len(ranked) - TOP_OPCODES} more opcodes (--json lists all)")
    return lines


def _print(report: Mapping[str, Any]) -> None:
    if report["completed_from"] is not None:
        given = json.dumps(report["completed_from"], sort_keys=True)
        print(f"completed {given} -> {json.dumps(report['config'], sort_keys=True)}")
    name, family, arch = report["kernel_name"], report["family"], report["arch"]
    print(f"{name} ({family}) for {arch}, config {report['config']}")
    if report["fallback_reason"]:
        print(f"  fallback      {report['fallback_reason']}")
    print(f"  registers     {report['registers']}")
    print(
        f"  shared memory {report['smem_bytes']} bytes "
        f"({report['static_smem_bytes']} static + {report['dynamic_smem_bytes']} dynamic)"
    )
    print(
        f"  spills        {report['spill_bytes']} bytes "
        f"({report['spill_store_bytes']} stored, {report['spill_load_bytes']} loaded)"
    )
    print(f"  stack         {report['stack_bytes']} bytes")
    for line in _histogram_lines("SASS, whole kernel", report["sass_counts"]):
        print(line)
    for line in _histogram_lines("SASS, main loop", report["main_loop_sass_counts"]):
        print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m generator.inspect",
        description="Render and compile one kernel; print its registers, shared memory, "
        "spills, stack and SASS opcode histograms (whole kernel and main loop).",
    )
    parser.add_argument("--op", choices=OPS, default="attention", help="kernel family")
    parser.add_argument(
        "--shape",
        required=True,
        help=f"attention: {SHAPE_FORMS['attention']}; gemm: {SHAPE_FORMS['gemm']}",
    )
    parser.add_argument(
        "--config",
        metavar="JSON",
        help='tile configuration, whole or partial, e.g. \'{"block_m":128,"num_warps":4}\' '
        "(default: the family's default configuration)",
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), help="target arch (default: sm_90...)")
    parser.add_argument(
        "--dtype",
        choices=GEMM_DTYPES,
        default="fp16",
        help="input dtype (e4m3: gemm on sm_90a, bf16 output)",
    )
    parser.add_argument("--causal", action="store_true", help="causal mask (attention)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        problem = parse_shape(args.op, args.shape, dtype=args.dtype, causal=args.causal)
    except ValueError as exc:
        parser.error(str(exc))
    if args.arch is None:
        from generator.toolchain import default_arch

        args.arch = default_arch()
    try:
        report = inspect_kernel(problem, args.arch, _parse_config(args.config))
    except (InvalidConfigError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    except TesseraError as exc:  # a compile error: the log follows the first line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m generator.inspect"))
