"""render(): specialization, the Params struct from its field list, hashes, invalid configs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import jinja2
import pytest

import generator.render as render_module
from generator.render import render, template_hash
from templates.registry import get_family
from tessera_core.errors import InvalidConfigError
from tessera_core.types import AttentionProblem, GemmProblem, TileConfig

ATTENTION = AttentionProblem(2, 3, 177, 211, 64, dtype="bf16", causal=True)
ATTENTION_CONFIG = TileConfig(64, 64, 16, 4, 2, options=(("q_in_regs", 1),))
GEMM = GemmProblem(333, 129, 71)
GEMM_CONFIG = TileConfig(64, 64, 32, 4, 3)


def test_specialized_source_bakes_problem_sizes_in() -> None:
    rendered = render(get_family("attention"), ATTENTION, ATTENTION_CONFIG, specialized=True)
    assert "constexpr int seq_q = 177;" in rendered.source
    assert "constexpr int seq_kv = 211;" in rendered.source
    assert "p.seq_q" not in rendered.source
    assert "constexpr bool CAUSAL = true;" in rendered.source
    assert "using elem_t = tessera::bf16_t;" in rendered.source


def test_generic_source_reads_problem_sizes_from_params() -> None:
    rendered = render(get_family("gemm"), GEMM, GEMM_CONFIG, specialized=False)
    for name in ("m", "n", "k"):
        assert f"const int {name.upper()} = p.{name};" in rendered.source
    assert "333" not in rendered.source
    other = render(get_family("gemm"), GemmProblem(5, 6, 7), GEMM_CONFIG, specialized=False)
    assert other.source == rendered.source  # one generic binary serves every size


@pytest.mark.parametrize("name", ["attention", "gemm"])
def test_params_struct_comes_from_the_family_field_list(name: str) -> None:
    family = get_family(name)
    problem, config = (ATTENTION, ATTENTION_CONFIG) if name == "attention" else (GEMM, GEMM_CONFIG)
    source = render(family, problem, config).source
    body = source[
        source.index("struct Params {") : source.index("};", source.index("struct Params {"))
    ]
    declared = [line.strip() for line in body.splitlines()[1:] if line.strip()]
    assert declared == [field.c_declaration() for field in family.params_fields]
    assert [n for n, _ in family.params_type._fields_] == [f.name for f in family.params_fields]


def test_rendered_kernel_carries_its_inputs_and_hashes() -> None:
    family = get_family("attention")
    rendered = render(family, ATTENTION, ATTENTION_CONFIG)
    assert rendered.family == "attention_fwd"
    assert rendered.kernel_name == family.kernel_name
    assert f"TESSERA_KERNEL({family.kernel_name}," in rendered.source
    assert (rendered.problem, rendered.config, rendered.specialized) == (
        ATTENTION,
        ATTENTION_CONFIG,
        True,
    )
    assert rendered.source_hash == hashlib.sha256(rendered.source.encode()).hexdigest()
    assert rendered.template_hash == template_hash(family)
    assert rendered.template_hash != template_hash(get_family("gemm"))


def test_invalid_config_lists_every_violation() -> None:
    # block_k 48 is no choice and not the mma depth; 4 warps > 32 rows; q_in_regs unset
    bad = TileConfig(32, 64, 48, 4, 2)
    with pytest.raises(InvalidConfigError) as info:
        render(get_family("attention"), ATTENTION, bad)
    message = str(info.value)
    assert "block_k=48 is not one of" in message
    assert "block_k_is_the_mma_depth" in message
    assert "q_in_regs is not set" in message
    assert "warps_tile_block_m" in message
    assert info.value.config == bad.to_dict()


def test_arch_specific_limits_apply_when_an_arch_is_given() -> None:
    config = TileConfig(128, 128, 64, 4, 4)  # 140 KiB of shared memory: not on sm_86
    render(get_family("gemm"), GEMM, config, arch="sm_80")
    with pytest.raises(InvalidConfigError, match="shared_memory"):
        render(get_family("gemm"), GEMM, config, arch="sm_86")


def test_problem_of_another_family_is_refused() -> None:
    with pytest.raises(ValueError, match="gemm"):
        render(get_family("attention"), GEMM, GEMM_CONFIG)


@pytest.fixture
def templates_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the templates tree that render() reads instead of the real one."""
    copy = tmp_path / "templates"
    shutil.copytree(render_module.TEMPLATES_DIR, copy, ignore=shutil.ignore_patterns("*.py"))
    monkeypatch.setattr(render_module, "TEMPLATES_DIR", copy)
    return copy


@pytest.mark.parametrize(
    "edited",
    [
        "gemm/gemm.cu.j2",
        "include/tessera/intrinsics.cuh",
        "include/tessera/intrinsics_host.h",
    ],
)
def test_template_hash_covers_the_template_and_its_headers(
    templates_copy: Path, edited: str
) -> None:
    family = get_family("gemm")
    before = template_hash(family)
    with (templates_copy / edited).open("a") as handle:
        handle.write("\n// edited\n")
    assert template_hash(family) != before


def test_undefined_template_variables_are_errors(templates_copy: Path) -> None:
    template = templates_copy / "gemm" / "gemm.cu.j2"
    template.write_text(template.read_text() + "\n// {{ no_such_variable }}\n")
    with pytest.raises(jinja2.UndefinedError, match="no_such_variable"):
        render(get_family("gemm"), GEMM, GEMM_CONFIG)
