"""The gemm main loop in SASS: one barrier per k-tile, and no bounds work on interior tiles.

Measured with `loops` on the template before pointer increments and the interior/edge split
(128x128x32, 4 warps, 3 stages, specialized 4096^3): one loop of 64 HMMA with 182 (sm_80) and
192 (sm_90) integer instructions, 34 integer compares and two BAR; after: 43 and 4 in the
interior loop. INT_OPS_PER_HMMA_MAX and COMPARES_MAX both fail the old kernel.
"""

from __future__ import annotations

import collections
import re

import pytest

from generator.compile import compile_kernel
from generator.render import render
from generator.sass import disassemble
from templates.gemm.family import FAMILY
from tessera_core.types import GemmProblem, TileConfig

ARCHS = ("sm_80", "sm_90")
DEFAULT_TILE = TileConfig(128, 128, 32, 4, 3, options=(("group_m", 8),))
NON_RAGGED = GemmProblem(4096, 4096, 4096)
RAGGED = GemmProblem(4000, 4000, 4008)  # edge tiles; K residue of 8 in 32
# The interior loop's integer work: the k-tile counter, the refill test, two stage indices,
# the 64-bit pointer steps of the cp.async passes and the shared-memory stage bases.
INT_OPS_PER_HMMA_MAX = 1.0
# Loop counter, refill (kt + NUM_STAGES - 1 < k_tiles) and the wrap of two stage indices.
COMPARES_MAX = 4

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T\d]\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
NEVER = ("@!PT", "@!UPT")  # predicated off: padding ptxas inserts, never issued
_TARGET = re.compile(r"0x([0-9a-f]+)")
# Integer ALU opcodes (regular and uniform datapath), moves included: what address and bounds
# arithmetic compiles to.
_INTEGER = re.compile(
    r"^U?(IADD3|IADD|IMAD|IMUL|VIADD|VIMNMX|IMNMX|IABS|LEA|LOP3|SHF|SEL|ISETP|PRMT|MOV|PLOP3|"
    r"P2R|R2P|R2UR|S2R|S2UR|LDC|POPC|FLO|BMSK|SGXT)\b"
)
_COMPARE = re.compile(r"^U?ISETP\b")


def loops(sass: str) -> list[collections.Counter[str]]:
    """Instruction counts of every loop: from a backward branch's target through the branch.

    Keys: base mnemonics ('HMMA', 'BAR'), plus 'INT' (integer ALU), 'ISETP*' (integer
    compares, uniform ones included) and 'TOTAL'.
    """
    lines = [
        (int(addr, 16), op, rest)
        for addr, predicate, op, rest in _LINE.findall(sass)
        if predicate.strip() not in NEVER
    ]
    found = []
    for addr, op, rest in lines:
        target = _TARGET.search(rest)
        if not op.startswith("BRA") or target is None or int(target.group(1), 16) >= addr:
            continue
        start = int(target.group(1), 16)
        counts: collections.Counter[str] = collections.Counter()
        for at, body_op, _ in lines:
            if start <= at <= addr:
                counts[body_op.split(".", 1)[0]] += 1
                counts["INT"] += bool(_INTEGER.match(body_op))
                counts["ISETP*"] += bool(_COMPARE.match(body_op))
                counts["TOTAL"] += 1
        found.append(counts)
    return found


def _main_loops(problem: GemmProblem, arch: str, *, specialized: bool) -> list[collections.Counter]:
    rendered = render(FAMILY, problem, DEFAULT_TILE, specialized=specialized, arch=arch)
    kernel = compile_kernel(rendered, arch=arch)
    main = [counts for counts in loops(disassemble(kernel.cubin)) if counts["HMMA"]]
    assert main, f"no loop with HMMA in the {arch} SASS"
    return main


def test_loops_finds_a_backward_branch_and_counts_its_body() -> None:
    sass = """
        /*0100*/                   IMAD R1, R2, 0x3, R4 ;
        /*0110*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0120*/                   ISETP.NE.AND P0, PT, R1, 0x10, PT ;
        /*0128*/             @!PT  LDS RZ, [RZ] ;
        /*0130*/              @P0  BRA 0x100 ;
        /*0140*/                   BRA 0x180 ;
    """
    (body,) = loops(sass)
    assert (body["HMMA"], body["INT"], body["ISETP*"], body["TOTAL"]) == (1, 2, 1, 4)


@pytest.mark.parametrize("arch", ARCHS)
def test_specialized_non_ragged_main_loop_has_no_bounds_work(arch: str) -> None:
    # Two loops: interior (aligned bases) and edge (the cold path left for misaligned bases).
    interior = min(_main_loops(NON_RAGGED, arch, specialized=True), key=lambda c: c["TOTAL"])
    assert interior["BAR"] == 1
    assert interior["ISETP*"] <= COMPARES_MAX, interior
    assert interior["INT"] <= INT_OPS_PER_HMMA_MAX * interior["HMMA"], interior
    for scalar_edge_op in ("LDG", "STS", "LDS"):  # the scalar edge path is not in this loop
        assert interior[scalar_edge_op] == 0, interior


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("specialized", [False, True], ids=["generic", "specialized"])
def test_every_main_loop_has_one_barrier_per_k_tile(arch: str, specialized: bool) -> None:
    main = _main_loops(RAGGED, arch, specialized=specialized)
    assert [counts["BAR"] for counts in main] == [1] * len(main)
    # The interior loop of a ragged problem is as lean: the K residue is loaded before it.
    interior = min(main, key=lambda c: c["TOTAL"])
    assert interior["INT"] <= INT_OPS_PER_HMMA_MAX * interior["HMMA"], interior
    assert interior["ISETP*"] <= COMPARES_MAX, interior
