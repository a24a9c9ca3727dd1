"""The problem-variant flags that `generator.tune` and `generator.verify` share, parsed into the
fields they set: attention's GQA, sliding window, softcap, ALiBi and layout, and a gemm's
operand layout (one --layout flag, read per op)."""

from __future__ import annotations

import argparse
import dataclasses
import math

from tessera_core.types import (
    ALIBI_FORMS,
    GEMM_LAYOUTS,
    LAYOUTS,
    AttentionDecodeProblem,
    AttentionProblem,
    GemmProblem,
    Problem,
)

HELP = {
    "gqa": "GQA/MQA as HEADS_Q:HEADS_KV, e.g. 32:8 (HEADS_Q must be --shape's heads)",
    "window": "sliding window LEFT,RIGHT in keys, -1 unbounded, e.g. 256,0 (FlashAttention-2's); "
    "a LEFT of -1 needs the = form: --window=-1,0",
    "softcap": "cap the scaled scores as X * tanh(s / X), X > 0 (Gemma-2's 30 or 50)",
    "alibi": "ALiBi slopes per head (default) or per batch and head: heads | batch_heads "
    "(attention and attention_decode)",
    "layout": "attention: q, k, v, o as bhsd [batch, heads, seq, d] (default) or bshd "
    "(FlashAttention's); gemm: operand storage, A's then B's, n as given, t transposed: "
    "nn (default), nt, tn, tt",
}


def _gqa(text: str) -> tuple[int, int]:
    parts = text.split(":")
    try:
        heads, heads_kv = (int(p) for p in parts)
    except ValueError:
        heads = heads_kv = 0
    if len(parts) != 2 or heads <= 0 or heads_kv <= 0 or heads % heads_kv:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected HEADS_Q:HEADS_KV, positive integers with HEADS_KV dividing "
            "HEADS_Q, e.g. 32:8"
        )
    return heads, heads_kv


def _window(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        left, right = (int(p) for p in parts)
    except ValueError:
        left = right = -2
    if len(parts) != 2 or left < -1 or right < -1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected LEFT,RIGHT, integers >= -1 (-1: unbounded), e.g. 256,0"
        )
    return left, right


def _softcap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number > 0, e.g. 30")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --gqa, --window, --softcap, --alibi (attention; --alibi also attention_decode) and
    --layout to `parser`."""
    group = parser.add_argument_group("attention variants (FlashAttention-2 semantics)")
    group.add_argument("--gqa", type=_gqa, metavar="HQ:HKV", help=HELP["gqa"])
    group.add_argument("--window", type=_window, metavar="LEFT,RIGHT", help=HELP["window"])
    group.add_argument("--softcap", type=_softcap, metavar="X", help=HELP["softcap"])
    group.add_argument(
        "--alibi", nargs="?", const="heads", choices=ALIBI_FORMS[1:], help=HELP["alibi"]
    )
    group.add_argument("--layout", choices=(*LAYOUTS, *GEMM_LAYOUTS), help=HELP["layout"])


def apply(problem: Problem, args: argparse.Namespace) -> Problem:
    """`problem` with the variants `args` name; ValueError (one line, naming the flag) if they
    do not fit it."""
    given = [
        flag
        for flag in ("gqa", "window", "softcap", "alibi", "layout")
        if getattr(args, flag, None) is not None
    ]
    if not given:
        return problem
    if isinstance(problem, GemmProblem) and given == ["layout"]:
        if args.layout not in GEMM_LAYOUTS:
            raise ValueError(
                f"--layout {args.layout}: a gemm takes {', '.join(GEMM_LAYOUTS)} (bhsd and bshd "
                "are attention's)"
            )
        return dataclasses.replace(problem, layout=args.layout)
    if not isinstance(problem, AttentionProblem):
        raise ValueError(f"--{given[0]} applies to attention only, not {problem.op}")
    if isinstance(problem, AttentionDecodeProblem):
        other = [f for f in given if f != "alibi"]
        if other:
            raise ValueError(
                f"--{other[0]} does not apply to attention_decode: "
                "its --shape names heads_kv, and windows and softcap are run-time values"
            )
        return dataclasses.replace(problem, alibi=args.alibi)
    fields: dict[str, object] = {}
    if args.gqa is not None:
        heads, heads_kv = args.gqa
        if heads != problem.heads:
            raise ValueError(
                f"--gqa {heads}:{heads_kv}: HEADS_Q={heads} must equal --shape's heads="
                f"{problem.heads}"
            )
        fields["heads_kv"] = heads_kv
    if args.window is not None:
        fields["window_left"], fields["window_right"] = args.window
    if args.softcap is not None:
        fields["softcap"] = args.softcap
    if args.alibi is not None:
        fields["alibi"] = args.alibi
    if args.layout is not None:
        if args.layout not in LAYOUTS:
            raise ValueError(
                f"--layout {args.layout}: attention takes {', '.join(LAYOUTS)} (nn, nt, tn and "
                "tt are a gemm's)"
            )
        fields["layout"] = args.layout
    return dataclasses.replace(problem, **fields)  # type: ignore[arg-type]


def flags(problem: Problem) -> str:
    """The flags that recreate `problem`'s variants ('' for plain attention and gemm nn)."""
    if isinstance(problem, GemmProblem):
        return "" if problem.layout == "nn" else f" --layout {problem.layout}"
    if isinstance(problem, AttentionDecodeProblem):
        return "" if problem.alibi == "none" else f" --alibi {problem.alibi}"
    if not isinstance(problem, AttentionProblem):
        return ""
    text = ""
    if problem.kv_heads != problem.heads:
        text += f" --gqa {problem.heads}:{problem.kv_heads}"
    if problem.has_window:
        text += f" --window {problem.window_left},{problem.window_right}"
    if problem.softcap:
        text += f" --softcap {problem.softcap:g}"
    if problem.alibi != "none":
        text += f" --alibi {problem.alibi}"
    if problem.layout != "bhsd":
        text += f" --layout {problem.layout}"
    return text
