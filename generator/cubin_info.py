"""A kernel's resources read from its cubin, for NVRTC builds whose ptxas log is empty.

NVRTC 13.0 on a device returned no `ptxas -v` report (generator.resources then has nothing to
parse), yet every cubin records what the driver needs to launch it in its ELF `.nv.info`
section: records of (format byte, attribute byte, two bytes of value or size, then `size`
bytes for the sized format). The attributes read here are sized records of (symbol index,
value) pairs: EIATTR_REGCOUNT (registers per thread) and EIATTR_FRAME_SIZE (stack bytes).
Static shared memory is the size of the kernel's `.nv.shared.<name>` section, less the
1 KiB the arch reserves (sm_90 puts it there and marks it with `.nv.shared.reserved.*`).
ptxas' spill bytes are not in the ELF: they are counted from the SASS (each STL stores, each
LDL loads, 4 bytes or the width of its .64/.128 suffix; the templates keep no arrays in local
memory, so all local traffic is spills) when cuobjdump can disassemble, else the whole stack
frame counts as spill stores and loads (zero stays zero, which is what callers check).
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections.abc import Iterator

from generator import sass as sass_tools
from generator.resources import Resources, parse_ptxas_log
from tessera_core.errors import TesseraError

EIATTR_FRAME_SIZE = 0x11
EIATTR_REGCOUNT = 0x2F
EIFMT_SVAL = 0x04  # sized record: a 16-bit size, then that many bytes
RESERVED_SMEM_BYTES = 1024  # cudaDevAttrReservedSharedMemoryPerBlock where it is in the ELF
_ELF_MAGIC = b"\x7fELF"
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYMBOL = struct.Struct("<IBBHQQ")  # Elf64_Sym
# "STL.64 [R1+0x8], R4" / "LDL.LU.128 R4, [R1]" -> width suffix.
_LOCAL_ACCESS = re.compile(r"\b(STL|LDL)((?:\.[A-Z0-9]+)*)\s")


def _sections(cubin: bytes) -> dict[str, tuple[int, int, int]]:
    """Section name -> (type, file offset, size) of an ELF64 little-endian image."""
    if cubin[:4] != _ELF_MAGIC or cubin[4] != 2 or cubin[5] != 1:
        raise ValueError("cubin: not a 64-bit little-endian ELF image (expected NVRTC's cubin)")
    (shoff,) = struct.unpack_from("<Q", cubin, 0x28)
    entsize, count, names_index = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [_SECTION_HEADER.unpack_from(cubin, shoff + i * entsize) for i in range(count)]
    names_offset = headers[names_index][4]

    def name(offset: int) -> str:
        start = names_offset + offset
        return cubin[start : cubin.index(b"\0", start)].decode()

    return {name(h[0]): (h[1], h[4], h[5]) for h in headers}


def _symbol_names(cubin: bytes, sections: dict[str, tuple[int, int, int]]) -> list[str]:
    _, sym_offset, sym_size = sections[".symtab"]
    _, str_offset, _ = sections[".strtab"]
    names = []
    for at in range(sym_offset, sym_offset + sym_size, _SYMBOL.size):
        start = str_offset + _SYMBOL.unpack_from(cubin, at)[0]
        names.append(cubin[start : cubin.index(b"\0", start)].decode())
    return names


def nv_info_records(cubin: bytes) -> Iterator[tuple[int, str, int]]:
    """(attribute, function name, value) of every per-function sized record in `.nv.info`."""
    sections = _sections(cubin)
    if ".nv.info" not in sections:
        return
    symbols = _symbol_names(cubin, sections)
    _, offset, size = sections[".nv.info"]
    at, end = offset, offset + size
    while at + 4 <= end:
        fmt, attribute, value = struct.unpack_from("<BBH", cubin, at)
        at += 4
        if fmt != EIFMT_SVAL:
            continue  # the value (if any) sat in the header's last two bytes
        if value == 8:
            index, number = struct.unpack_from("<II", cubin, at)
            if index < len(symbols):
                yield attribute, symbols[index], number
        at += value


def local_memory_bytes(sass: str) -> tuple[int, int]:
    """(bytes stored by STL, bytes loaded by LDL) over the instructions of a SASS listing."""
    stored = loaded = 0
    for opcode, suffixes in _LOCAL_ACCESS.findall(sass):
        widths = [int(s) for s in suffixes.split(".") if s in ("64", "128")]
        width = widths[0] // 8 if widths else 4
        if opcode == "STL":
            stored += width
        else:
            loaded += width
    return stored, loaded


def resources_from_cubin(cubin: bytes, kernel_name: str, sass: str | None = None) -> Resources:
    """`kernel_name`'s registers, static shared memory, stack and spills, read from `cubin`.

    `sass` is the kernel's disassembly when the caller has it; spills are counted from it
    (see the module docstring). Raises ValueError when the cubin holds no register count
    for `kernel_name`.
    """
    sections = _sections(cubin)
    registers = frame = None
    for attribute, function, value in nv_info_records(cubin):
        if function != kernel_name:
            continue
        if attribute == EIATTR_REGCOUNT:
            registers = value
        elif attribute == EIATTR_FRAME_SIZE:
            frame = value
    if registers is None:
        found = sorted({f for a, f, _ in nv_info_records(cubin) if a == EIATTR_REGCOUNT})
        raise ValueError(
            f"cubin: no EIATTR_REGCOUNT for entry {kernel_name!r} in .nv.info "
            f"(entries: {found}); is it the cubin of that kernel?"
        )
    shared = sections.get(f".nv.shared.{kernel_name}", (0, 0, 0))[2]
    if any(name.startswith(".nv.shared.reserved") for name in sections):
        shared = max(0, shared - RESERVED_SMEM_BYTES)
    stack = frame or 0
    stored, loaded = local_memory_bytes(sass) if sass is not None else (stack, stack)
    return Resources(
        registers=registers,
        static_smem_bytes=shared,
        spill_store_bytes=stored,
        spill_load_bytes=loaded,
        stack_bytes=stack,
    )


def read_resources(log: str, cubin: bytes, kernel_name: str) -> Resources:
    """Resources from the ptxas report in `log`, else (an empty or foreign log) from `cubin`.

    Raises:
        ValueError: neither the log nor the cubin describes `kernel_name`.
    """
    try:
        return parse_ptxas_log(log, kernel_name)
    except ValueError as from_log:
        if not cubin:
            raise
        try:
            sass: str | None = sass_tools.disassemble(cubin)
        except (TesseraError, OSError, subprocess.SubprocessError):
            sass = None  # no cuobjdump here: the stack frame stands in for the spills
        try:
            return resources_from_cubin(cubin, kernel_name, sass)
        except ValueError as from_cubin:
            raise ValueError(f"{from_log}; and {from_cubin}") from None
