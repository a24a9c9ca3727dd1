"""Render a kernel family's Jinja2 template for one problem and tile configuration."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from templates.family import Family
from tessera_core.errors import InvalidConfigError
from tessera_core.hardware import ARCHS
from tessera_core.types import Problem, TileConfig

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
_INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.MULTILINE)


@dataclass(frozen=True)
class RenderedKernel:
    """One rendered CUDA source with what produced it and its hashes."""

    family: str
    kernel_name: str
    source: str
    problem: Problem
    config: TileConfig
    specialized: bool
    template_hash: str  # SHA-256 over the template and every tessera/ header it includes
    source_hash: str  # SHA-256 of `source`


@functools.cache
def _environment(templates_dir: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _included_headers(text: str, base_dir: Path, include_dir: Path, seen: set[Path]) -> list[Path]:
    """Project headers `text` includes, transitively, in first-include order.

    A quoted include is looked up next to the including file first, then under include_dir;
    headers found in neither place (cuda_fp16.h, system headers) are not part of the hash.
    """
    found: list[Path] = []
    for quote, name in _INCLUDE_RE.findall(text):
        candidates = [base_dir / name] if quote == '"' else []
        candidates.append(include_dir / name)
        path = next((c.resolve() for c in candidates if c.is_file()), None)
        if path is None or path in seen:
            continue
        seen.add(path)
        found.append(path)
        found.extend(_included_headers(path.read_text(), path.parent, include_dir, seen))
    return found


def template_hash(family: Family) -> str:
    """SHA-256 over the family's template file and the intrinsics header(s) it includes.

    Headers are found by following `#include` lines into templates/include; the host
    emulation half (intrinsics_host.h and what it includes) is reached through the device
    header, so it counts too.
    """
    template_text = (TEMPLATES_DIR / family.template_path).read_text()
    include_dir = TEMPLATES_DIR / "include"
    digest = hashlib.sha256()
    digest.update(family.template_path.encode())
    digest.update(b"\0")
    digest.update(template_text.encode())
    headers = _included_headers(template_text, TEMPLATES_DIR, include_dir, set())
    for header in headers:
        digest.update(b"\0")
        digest.update(header.relative_to(include_dir.resolve()).as_posix().encode())
        digest.update(b"\0")
        digest.update(header.read_bytes())
    return digest.hexdigest()


def check_config(family: Family, problem: Problem, config: TileConfig, arch: str | None) -> None:
    """Raise InvalidConfigError listing every rule `config` breaks.

    With `arch=None` the configuration must be valid on at least one known arch (shared memory
    limits differ); the arch-specific check is repeated at compile time.
    """
    archs = [arch] if arch is not None else sorted(ARCHS)
    violations: list[str] = []
    for candidate in archs:
        violations = family.space.violations(config, problem, candidate)
        if not violations:
            return
    where = archs[0] if len(archs) == 1 else "any supported arch"
    detail = "".join(f"\n  - {reason}" for reason in violations)
    raise InvalidConfigError(
        f"{family.name} config {config} is invalid for {problem} on {where}:{detail}"
        "\n  pick a configuration from the family's space.valid_configs(problem, arch)",
        config=config.to_dict(),
    )


def render(
    family: Family,
    problem: Problem,
    config: TileConfig,
    *,
    specialized: bool = True,
    arch: str | None = None,
) -> RenderedKernel:
    """Render `family`'s template for `problem` and `config`.

    `specialized` makes the problem sizes compile-time constants; otherwise they are read from
    the Params struct at run time and one binary serves every size of the problem class.

    Raises:
        InvalidConfigError: listing every violated rule of the family's space.
    """
    if problem.op != family.op:  # gemm_sm90 serves the gemm problem, attention_sm90 attention's
        raise ValueError(f"a {problem.op} problem given to family {family.name!r} ({family.op})")
    check_config(family, problem, config, arch)
    context = family.template_context(problem, config, specialized=specialized)
    source = _environment(str(TEMPLATES_DIR)).get_template(family.template_path).render(**context)
    return RenderedKernel(
        family=family.name,
        kernel_name=family.kernel_name,
        source=source,
        problem=problem,
        config=config,
        specialized=specialized,
        template_hash=template_hash(family),
        source_hash=hashlib.sha256(source.encode()).hexdigest(),
    )
