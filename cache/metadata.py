"""Entry metadata from untrusted bytes: bounded size and depth, finite numbers, checked types.

Entry files come from anywhere (a shipped layer, a bundle, a disk that lies), so parsing the
metadata JSON may never raise anything but a reason: no RecursionError from deep nesting, no
ValueError from a 5,000-digit integer, no NaN or Infinity that later breaks arithmetic or
formatting, no field of the wrong type that a caller (`ls`, `load_specialized`) trips over.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# A real entry's metadata (problem, config, objective, resources, search, a 10-row
# leaderboard) is 2-4 KB; 1 MiB is generous and still a bounded read.
MAX_METADATA_BYTES = 1024**2
# Real metadata nests 3 deep (leaderboard -> row -> config); deeper is not ours, and a
# consumer that recurses (json.dumps with indent) must never meet 1,000 levels.
MAX_DEPTH = 16
# Sizes, counts and timestamps fit in 19 digits; anything longer is not a number we wrote.
MAX_INT_DIGITS = 19
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_OPTIONAL_STR = ("template_hash", "nvrtc_version", "kernel_name")
_OPTIONAL_DICT = ("objective", "config", "problem", "resources", "launch", "search")
_OBJECTIVE_NUMBERS = ("value", "time_ms", "tflops")


class MetadataError(ValueError):
    """Metadata that cannot be trusted; the message is the reason."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise MetadataError(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MetadataError(f"non-finite number {text[:20]!r}")
    return value


def _refuse_constant(name: str) -> Any:
    raise MetadataError(f"non-finite number {name}")


def _depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value, iteratively (the value may be deep)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, (dict, list)):
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _payload_problem(name: str, record: Any) -> str | None:
    if record is None:
        return None
    if not isinstance(record, dict):
        return f"payload {name} is {type(record).__name__}, expected an object or null"
    size = record.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"payload {name} has no valid size"
    sha = record.get("sha256")
    if not isinstance(sha, str) or _SHA256_RE.fullmatch(sha) is None:
        return f"payload {name} has no valid sha256"
    return None


def _field_problem(metadata: dict[str, Any]) -> str | None:
    """The first field of the wrong type, as a reason; None if every field fits."""
    for name in ("kernel_key", "arch"):
        if not isinstance(metadata.get(name), str):
            return f"field {name!r} is missing or not a string"
    if not isinstance(metadata.get("format_version"), int) or isinstance(
        metadata.get("format_version"), bool
    ):
        return "field 'format_version' is missing or not an integer"
    for name in _OPTIONAL_STR:
        if metadata.get(name) is not None and not isinstance(metadata[name], str):
            return f"field {name!r} is not a string"
    for name in _OPTIONAL_DICT:
        if metadata.get(name) is not None and not isinstance(metadata[name], dict):
            return f"field {name!r} is not an object"
    if "created_at" in metadata and not _is_number(metadata["created_at"]):
        return "field 'created_at' is not a number"
    if metadata.get("leaderboard") is not None and not isinstance(metadata["leaderboard"], list):
        return "field 'leaderboard' is not a list"
    objective = metadata.get("objective") or {}
    for name in _OBJECTIVE_NUMBERS:
        if name in objective and not _is_number(objective[name]):
            return f"objective {name!r} is not a number"
    payloads = metadata.get("payloads")
    if not isinstance(payloads, dict) or set(payloads) != {"cubin", "ptx"}:
        return "field 'payloads' is not an object with exactly 'cubin' and 'ptx'"
    for name in ("cubin", "ptx"):
        problem = _payload_problem(name, payloads[name])
        if problem is not None:
            return problem
    if payloads["cubin"] is None and payloads["ptx"] is None:
        return "entry has neither a cubin nor a PTX"
    return None


def parse_json(data: bytes) -> Any:
    """A JSON value from untrusted bytes: finite numbers, integers of at most 19 digits, at
    most MAX_DEPTH levels. Raises MetadataError (never another exception)."""
    try:
        value = json.loads(
            data, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
        )
    except MetadataError:
        raise
    except RecursionError:
        raise MetadataError("nested too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MetadataError(f"unparsable: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise MetadataError(f"nested more than {MAX_DEPTH} levels")
    return value


def parse_metadata(meta_bytes: bytes) -> dict[str, Any]:
    """The metadata object of an entry, checked.

    Raises:
        MetadataError: the reason it cannot be trusted (never another exception).
    """
    if len(meta_bytes) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata of {len(meta_bytes)} bytes (at most {MAX_METADATA_BYTES})")
    try:
        metadata = parse_json(meta_bytes)
    except MetadataError as exc:
        raise MetadataError(f"metadata {exc}") from None
    if not isinstance(metadata, dict):
        raise MetadataError(f"metadata is {type(metadata).__name__}, expected an object")
    problem = _field_problem(metadata)
    if problem is not None:
        raise MetadataError(problem)
    return metadata
