"""SASS of a cubin through cuobjdump (which runs nvdisasm), and counts of its instructions."""

from __future__ import annotations

import collections
import re
import subprocess
import tempfile
from pathlib import Path

from generator import toolchain
from tessera_core.config import child_environment
from tessera_core.errors import CudaError

CUOBJDUMP_TIMEOUT_S = 120
# A SASS line: "/*0080*/  @!P0 HMMA.16816.F32 R4, R8, R12, R4 ;" -> opcode "HMMA.16816.F32".
_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T\d]\s+)?([A-Z][A-Z0-9_.]*)")


def _run_cuobjdump(flag: str, cubin: bytes) -> str:
    nvdisasm_dir = str(Path(toolchain.nvdisasm_path()).parent)
    env = child_environment(prepend_path=nvdisasm_dir)
    with tempfile.TemporaryDirectory(prefix="tessera-sass-") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        result = subprocess.run(
            [toolchain.cuobjdump_path(), flag, str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=CUOBJDUMP_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        raise CudaError(
            f"cuobjdump {flag} failed ({result.returncode}): {result.stderr.strip()}; "
            "is the cubin complete, and is nvdisasm from the same CUDA release installed?"
        )
    return result.stdout


def disassemble(cubin: bytes) -> str:
    """The SASS listing of every function in `cubin` (cuobjdump -sass)."""
    return _run_cuobjdump("-sass", cubin)


def resource_usage(cubin: bytes) -> str:
    """cuobjdump's resource report (REG, SHARED, LOCAL, ...) for every function in `cubin`."""
    return _run_cuobjdump("-res-usage", cubin)


def opcode_counts(sass: str) -> dict[str, int]:
    """Full opcodes with modifiers ('HMMA.16816.F32', 'LDSM.16.M88.4') and how often each occurs."""
    return dict(collections.Counter(_INSTRUCTION.findall(sass)))


def instruction_counts(cubin: bytes) -> dict[str, int]:
    """Base mnemonics ('HMMA', 'LDSM', 'LDGSTS', 'SHFL') of `cubin`'s SASS and their counts."""
    counts: collections.Counter[str] = collections.Counter()
    for opcode, count in opcode_counts(disassemble(cubin)).items():
        counts[opcode.split(".", 1)[0]] += count
    return dict(counts)


# "/*3530*/   @P0 BRA 0xde0 ;" -> address 0x3530, opcode "BRA", operands "0xde0".
_LINE = re.compile(
    r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T\d]\s+)?([A-Z][A-Z0-9_.]*)([^;]*);", re.IGNORECASE
)
_BRANCH_TARGET = re.compile(r"0x([0-9a-f]+)\s*$", re.IGNORECASE)


def instructions(sass: str) -> list[tuple[int, str, str]]:
    """(address, opcode with modifiers, operands) of every instruction in `sass`, in order."""
    return [
        (int(address, 16), opcode, operands.strip())
        for address, opcode, operands in _LINE.findall(sass)
    ]


# The tensor-core MMA opcodes a main loop is recognised by: HMMA (mma.sync), HGMMA (wgmma,
# fp16/bf16) and QGMMA (wgmma, FP8).
TENSOR_OPCODES = frozenset({"HMMA", "HGMMA", "QGMMA"})


def main_loop(sass: str) -> list[tuple[int, str, str]]:
    """The instructions of the kernel's main loop: its SASS body, one trip of the loop as compiled.

    A loop in SASS is a backward branch: `BRA target` at address a with target <= a; its body
    is every instruction from target to a. The main loop is the body holding the most tensor
    MMAs (TENSOR_OPCODES: mma.sync's HMMA, wgmma's HGMMA and, for FP8, QGMMA: the KV or k
    loop, the consumers' loop of a warp-specialized kernel); on a tie the shortest such body
    (the innermost loop). If ptxas unrolled the loop, the body holds several source
    iterations; callers divide by the unroll factor they infer (MMAs in the body / MMAs per
    iteration). Empty when the kernel has no backward branch with a tensor MMA in its body.
    """
    listing = instructions(sass)
    best: tuple[int, int, int, int] | None = None  # (-hmma, length, start, end)
    for index, (address, opcode, operands) in enumerate(listing):
        if opcode.split(".", 1)[0] != "BRA":
            continue
        target = _BRANCH_TARGET.search(operands)
        if target is None or int(target.group(1), 16) > address:
            continue
        start = next(i for i, ins in enumerate(listing) if ins[0] >= int(target.group(1), 16))
        body = listing[start : index + 1]
        hmma = sum(op.split(".", 1)[0] in TENSOR_OPCODES for _, op, _ in body)
        if hmma == 0:
            continue
        key = (-hmma, len(body), start, index)
        if best is None or key < best:
            best = key
    return [] if best is None else listing[best[2] : best[3] + 1]


def histogram(listing: list[tuple[int, str, str]]) -> dict[str, int]:
    """Counts of the base mnemonics ('HMMA', 'LDSM', 'BAR') of `listing`."""
    return dict(collections.Counter(opcode.split(".", 1)[0] for _, opcode, _ in listing))


_counts_memo: dict[str, tuple[dict[str, int], dict[str, int]]] = {}


def kernel_and_loop_counts(
    cubin: bytes, cache_dir: Path | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """(whole-kernel histogram, main-loop histogram) of `cubin`, cached by the cubin's SHA-256.

    Disassembly costs about a second, so the counts are kept in memory and as a small JSON
    file under `cache_dir` (default: the compile cache's `sass/` folder): a tuner that meets
    the same cubin again, in this process or a later one, does not disassemble it again.

    Raises:
        CudaError: cuobjdump failed or is not installed.
    """
    import hashlib
    import json

    from tessera_core.config import default_compile_cache_dir

    digest = hashlib.sha256(cubin).hexdigest()
    if digest in _counts_memo:
        return _counts_memo[digest]
    folder = cache_dir if cache_dir is not None else default_compile_cache_dir() / "sass"
    path = folder / f"{digest}.json"
    try:
        stored = json.loads(path.read_text())
        counts = (dict(stored["kernel"]), dict(stored["main_loop"]))
    except (OSError, ValueError, KeyError, TypeError):
        try:
            sass = disassemble(cubin)
        except (OSError, subprocess.TimeoutExpired) as exc:  # missing, not executable, hung
            raise CudaError(f"cuobjdump could not run: {exc}") from exc
        counts = (histogram(instructions(sass)), histogram(main_loop(sass)))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{digest[:8]}.tmp")
            tmp.write_text(json.dumps({"kernel": counts[0], "main_loop": counts[1]}))
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs the next process a disassembly
    _counts_memo[digest] = counts
    return counts
