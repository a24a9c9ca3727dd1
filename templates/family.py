"""What every kernel family declares next to its template: space, launch geometry, parameters."""

from __future__ import annotations

import ctypes
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tessera_core.space import Space
from tessera_core.types import Problem, TileConfig


@dataclass(frozen=True)
class LaunchGeometry:
    """How one rendered kernel is launched for one problem."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    smem_bytes: int  # dynamic shared memory; above 48 KiB needs the opt-in attribute at load


class Family(Protocol):
    """A kernel family (attention_fwd, gemm): one template and everything that goes with it."""

    name: str  # "attention_fwd" | "gemm"; also the template file stem
    op: str  # "attention" | "gemm"
    kernel_name: str  # the extern "C" entry point in the rendered source
    template_path: str  # relative to the templates package, e.g. "attention/attention_fwd.cu.j2"
    space: Space
    params_type: type[ctypes.Structure]  # mirrors the kernel's Params struct, by value
    params_fields: tuple[ParamField, ...]  # the one source of the C struct and params_type

    def make_params(
        self, problem: Problem, *, pointers: Mapping[str, int], scale: float | None = None
    ) -> ctypes.Structure:
        """The kernel's by-value argument; `pointers` maps tensor names to device addresses."""
        ...

    def template_context(
        self, problem: Problem, config: TileConfig, *, specialized: bool
    ) -> Mapping[str, Any]:
        """Jinja2 variables; `specialized` makes problem sizes compile-time constants."""
        ...

    def launch_geometry(self, problem: Problem, config: TileConfig) -> LaunchGeometry: ...

    def smem_bytes(self, problem: Problem, config: TileConfig) -> int: ...

    def default_config(self, problem: Problem, arch: str) -> TileConfig:
        """The heuristic configuration of the generic (tier 2) kernel for this problem class."""
        ...


class TileRules(Protocol):
    """What a family's space module answers about one tile configuration (templates/*/space.py)."""

    def grid(self, problem: Problem, config: TileConfig) -> tuple[int, int, int]: ...

    def smem_bytes(self, problem: Problem, config: TileConfig) -> int: ...

    def default_config(self, problem: Problem, arch: str) -> TileConfig: ...


class SpaceFamily:
    """The part of a Family that its space module decides: launch geometry (the space's grid,
    num_warps warps per block, the space's shared memory), shared memory and the default
    configuration. A family subclasses it and names its space module as `tiles`."""

    tiles: TileRules

    def launch_geometry(self, problem: Problem, config: TileConfig) -> LaunchGeometry:
        return LaunchGeometry(
            grid=self.tiles.grid(problem, config),
            block=(config.num_threads, 1, 1),
            smem_bytes=self.smem_bytes(problem, config),
        )

    def smem_bytes(self, problem: Problem, config: TileConfig) -> int:
        return self.tiles.smem_bytes(problem, config)

    def default_config(self, problem: Problem, arch: str) -> TileConfig:
        """The heuristic configuration of the generic (tier 2) kernel for this problem class."""
        return self.tiles.default_config(problem, arch)


@dataclass(frozen=True, kw_only=True)
class ParamField:
    """One field of a kernel's by-value Params struct: the single source of its C and ctypes forms.

    `c_type` may name `elem_t`, the template's 16-bit element type; pointers travel as c_void_p.
    """

    name: str
    c_type: str
    ctype: type  # a ctypes scalar type: c_void_p, c_int32, c_float

    def c_declaration(self) -> str:
        return f"{self.c_type} {self.name};"


def params_structure(name: str, fields: tuple[ParamField, ...]) -> type[ctypes.Structure]:
    """The ctypes.Structure laid out exactly as the C struct rendered from the same `fields`."""
    return type(name, (ctypes.Structure,), {"_fields_": [(f.name, f.ctype) for f in fields]})


def checked_pointers(
    family: str,
    pointers: Mapping[str, int],
    names: tuple[str, ...],
    align_bytes: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """The device pointers `names` of a launch, each present and aligned as the kernel needs.

    Raises:
        ValueError: naming the family and the missing or misaligned pointers.
    """
    missing = [n for n in names if n not in pointers]
    if missing:
        raise ValueError(f"{family} make_params: missing pointers {missing}")
    misaligned = [
        f"{n}=0x{pointers[n]:x} (needs {align}-byte alignment)"
        for n, align in (align_bytes or {}).items()
        if pointers[n] % align
    ]
    if misaligned:
        raise ValueError(
            f"{family} make_params: misaligned tensors {', '.join(misaligned)}; "
            "pass contiguous tensors that start at an aligned address (copy the view)"
        )
    return {n: pointers[n] for n in names}


def launch_params(
    family: Family, problem: Problem, pointers: Mapping[str, int], *, scale: float | None = None
) -> ctypes.Structure:
    """The family's Params for a GPU launch. A TMA family (its make_params takes
    `tensor_map_encoding`, as gemm_sm90's does) gets its tensor maps encoded by the CUDA driver;
    its default encodes them for the emulator."""
    make_params: Any = family.make_params  # the Family protocol does not name the keyword
    extra: dict[str, Any] = {} if scale is None else {"scale": scale}
    if "tensor_map_encoding" in inspect.signature(make_params).parameters:
        extra["tensor_map_encoding"] = "driver"
    return make_params(problem, pointers=pointers, **extra)
