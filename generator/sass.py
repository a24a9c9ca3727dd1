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
