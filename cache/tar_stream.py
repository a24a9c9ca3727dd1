"""A streaming reader of the tar subset kernel bundles use, every size bounded before it is read.

tarfile reads a PAX ('x', 'g') or GNU long-name ('L', 'K') header's data whole into memory,
however large its header block claims it is, before anything can look at it; a 200-byte
bundle can so ask for gigabytes. This reader parses the 512-byte header blocks itself,
refuses an extended header above MAX_EXTENDED_HEADER_BYTES before reading it, hands the
caller each member's header (name, type, size) before its data so it can be refused
unread, and counts every decompressed byte against a limit the caller can lower as it learns
what to expect (from the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

BLOCK = 512
# A PAX record for the longest member name (entries/ + a 200-character key + .kernel) is
# under 300 bytes; 8 KiB also fits the few other records a tar writer may add.
MAX_EXTENDED_HEADER_BYTES = 8 * 1024
MAX_EXTENDED_HEADERS = 4  # per member ('x' and 'L'/'K' cover every real writer)
REGULAR_TYPES = (b"0", b"\0", b"7")
LINK_TYPES = (b"1", b"2")
_GNU_LONG = (b"L", b"K")


class TarFormatError(ValueError):
    """The stream is not a tar this reader accepts; the message says why."""


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True, kw_only=True)
class Member:
    name: str
    type: bytes  # the typeflag: b"0" regular, b"2" symlink, b"5" directory, ...
    size: int
    linkname: str = ""

    @property
    def is_regular(self) -> bool:
        return self.type in REGULAR_TYPES

    @property
    def is_link(self) -> bool:
        return self.type in LINK_TYPES


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        raise TarFormatError(f"{what} in base-256 (8 GiB or more)")
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if any(c not in b"01234567" for c in digits):
        raise TarFormatError(f"bad {what} field {field!r}")
    return int(digits, 8)


def _parse_block(block: bytes) -> Member:
    stored = _octal(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b >= 0x80)
    if stored not in (unsigned, signed):
        raise TarFormatError("header checksum mismatch (not a tar, or corrupt)")
    name = _cstr(block[0:100])
    if block[257:263] == b"ustar\0" and block[345] != 0:  # POSIX ustar: name prefix
        name = f"{_cstr(block[345:500])}/{name}"
    return Member(
        name=name,
        type=block[156:157],
        size=_octal(block[124:136], "size"),
        linkname=_cstr(block[157:257]),
    )


def _pax_records(data: bytes) -> dict[str, str]:
    """`<length> <key>=<value>\\n` records of a PAX header."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 12)
        if space < 0 or not data[pos:space].isdigit():
            raise TarFormatError("malformed PAX record length")
        end = pos + int(data[pos:space])
        if end <= space or end > len(data) or data[end - 1 : end] != b"\n":
            raise TarFormatError("malformed PAX record")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise TarFormatError("malformed PAX record (no '=')")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos = end
    return records


class TarReader:
    """Members of a decompressed tar stream, one at a time, in order."""

    def __init__(self, stream: Readable, *, limit_bytes: int) -> None:
        self._stream = stream
        self.limit_bytes = limit_bytes  # the caller may lower it as it learns more
        self.consumed_bytes = 0

    def _read(self, size: int) -> bytes:
        if self.consumed_bytes + size > self.limit_bytes:
            raise TarFormatError(f"decompresses to more than {self.limit_bytes} bytes")
        chunks, left = [], size
        while left:
            chunk = self._stream.read(left)
            if not chunk:
                raise TarFormatError("truncated (ends inside a member)")
            chunks.append(chunk)
            left -= len(chunk)
        self.consumed_bytes += size
        return b"".join(chunks)

    def _read_padded(self, size: int) -> bytes:
        data = self._read(size)
        self._read(-size % BLOCK)
        return data

    def next_member(self) -> Member | None:
        """The next member's header (extended headers applied); None at the end marker.

        Its data must then be read with `read_data` (or the reader abandoned).
        """
        overrides: dict[str, str] = {}
        for _ in range(MAX_EXTENDED_HEADERS + 1):
            block = self._read(BLOCK)
            if block == bytes(BLOCK):
                return None
            member = _parse_block(block)
            if member.type == b"g":
                raise TarFormatError("global PAX header (kernel bundles never have one)")
            if member.type != b"x" and member.type not in _GNU_LONG:
                return _apply(member, overrides)
            if member.size > MAX_EXTENDED_HEADER_BYTES:
                raise TarFormatError(
                    f"extended header (type {member.type.decode(errors='replace')!r}) of "
                    f"{member.size} bytes; at most {MAX_EXTENDED_HEADER_BYTES}, refused unread"
                )
            data = self._read_padded(member.size)
            if member.type == b"x":
                overrides.update(_pax_records(data))
            else:
                key = "path" if member.type == b"L" else "linkpath"
                overrides[key] = _cstr(data)
        raise TarFormatError(f"more than {MAX_EXTENDED_HEADERS} extended headers for one member")

    def read_data(self, member: Member) -> bytes:
        """The member's data (the caller has checked its size is one it accepts)."""
        return self._read_padded(member.size)


def _apply(member: Member, overrides: dict[str, str]) -> Member:
    size = member.size
    if "size" in overrides:
        if not overrides["size"].isdigit() or len(overrides["size"]) > 19:
            raise TarFormatError(f"bad PAX size {overrides['size'][:30]!r}")
        size = int(overrides["size"])
    return Member(
        name=overrides.get("path", member.name),
        type=member.type,
        size=size,
        linkname=overrides.get("linkpath", member.linkname),
    )
