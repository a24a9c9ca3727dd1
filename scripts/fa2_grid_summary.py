"""Counts a FlashAttention-2 grid run's outcomes per test, per axis value and per skip reason.

    python -m pytest tests/runtime/test_fa2_grid.py -m slow -p no:randomly --junitxml=grid.xml
    python scripts/fa2_grid_summary.py grid.xml [more.xml ...] [--json]

Reads pytest's JUnit XML reports (several runs add up), keeps the test_fa2_* cases, and reads
each cell's axes from its id (key=value parts joined by '-', as tests/runtime/fa2_grid.py writes
them). Skip reasons are grouped with their numbers masked ("head_dim=N is not supported"), one
example kept. Exit status: 0, 1 if any cell failed, 2 for an unreadable report.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

OUTCOMES = ("passed", "failed", "skipped")
_CASE = re.compile(r"^(?P<test>test_fa2_\w+)\[(?P<cell>[^\]]*)\]$")


def _outcome(case: ET.Element) -> tuple[str, str]:
    """('passed' | 'failed' | 'skipped', message) of one <testcase>."""
    for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
        child = case.find(tag)
        if child is not None:
            return outcome, (child.get("message") or "").strip()
    return "passed", ""


class ReportError(Exception):
    """A report cannot be read or is not XML."""


def _cases(report: Path) -> list[ET.Element]:
    try:
        return list(ET.parse(report).getroot().iter("testcase"))
    except (OSError, ET.ParseError) as exc:
        raise ReportError(f"report {report}: {exc}") from None


def _natural(text: str) -> list[Any]:
    """Sort key that orders d=32 before d=128."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _axes(cell: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in cell.split("-") if "=" in part)


def summarize(reports: list[Path]) -> dict[str, Any]:
    """Counts of JUnit XML reports: totals, per test, per axis value, skip reasons, failures."""
    totals: Counter[str] = Counter()
    per_test: dict[str, Counter[str]] = defaultdict(Counter)
    per_axis: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    reasons: Counter[str] = Counter()
    examples: dict[str, str] = {}
    failures: list[dict[str, str]] = []
    cases = [case for report in reports for case in _cases(report)]
    for case in cases:
        match = _CASE.match(case.get("name", ""))
        if match is None:
            continue
        outcome, message = _outcome(case)
        totals[outcome] += 1
        per_test[match["test"]][outcome] += 1
        for axis, value in _axes(match["cell"]).items():
            per_axis[axis][value][outcome] += 1
        if outcome == "skipped":
            reason = re.sub(r"\d+", "N", message.removeprefix("Skipped: "))
            reasons[reason] += 1
            examples.setdefault(reason, message)
        elif outcome == "failed":
            first_line = (message.splitlines() or [""])[0]
            failures.append({"cell": case.get("name", ""), "message": first_line})
    return {
        "totals": {o: totals[o] for o in OUTCOMES},
        "tests": {t: {o: c[o] for o in OUTCOMES} for t, c in sorted(per_test.items())},
        "axes": {
            axis: {v: {o: values[v][o] for o in OUTCOMES} for v in sorted(values, key=_natural)}
            for axis, values in sorted(per_axis.items())
        },
        "skip_reasons": [
            {"count": n, "reason": r, "example": examples[r]} for r, n in reasons.most_common()
        ],
        "failures": failures,
    }


def _counts(c: dict[str, int]) -> str:
    return f"{c['passed']:6d} passed {c['failed']:6d} failed {c['skipped']:6d} skipped"


def render(summary: dict[str, Any]) -> str:
    t = summary["totals"]
    cells = sum(t.values())
    lines = [f"FA2 grid: {cells} cells: {t['passed']} passed, {t['failed']} failed, "
             f"{t['skipped']} skipped"]  # fmt: skip
    lines += ["", "per test:"]
    lines += [f"  {name:28s}{_counts(c)}" for name, c in summary["tests"].items()]
    lines += ["", "per axis value:"]
    for axis, values in summary["axes"].items():
        lines += [f"  {axis + '=' + value:28s}{_counts(c)}" for value, c in values.items()]
    lines += ["", "skip reasons (numbers masked as N):"]
    lines += [f"  {s['count']:6d}  {s['reason']}" for s in summary["skip_reasons"]]
    if summary["failures"]:
        lines += ["", "failures:"]
        lines += [f"  {f['cell']}: {f['message']}" for f in summary["failures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="pytest --junitxml output(s)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.reports)
    except ReportError as exc:
        print(f"fa2_grid_summary: {exc}; pass pytest's --junitxml files",
              file=sys.stderr)  # fmt: skip
        return 2
    print(json.dumps(summary, indent=1) if args.json else render(summary))
    return 1 if summary["totals"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
