"""RuntimeConfig: keyword-only, validated fields, and the Runtime(device=...) shorthand."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_fakes import FakeBackends

from runtime import Runtime, RuntimeConfig
from tessera_core.errors import NoDeviceError


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "tpu", r"RuntimeConfig.device='tpu': expected one of auto, cuda"),
        ("tier2_min_calls", -1, r"RuntimeConfig.tier2_min_calls=-1: must be an integer >= 0"),
        ("tier3_min_time_ms", -0.5, r"RuntimeConfig.tier3_min_time_ms=-0.5: must be a number"),
        ("max_loaded_kernels", 0, r"RuntimeConfig.max_loaded_kernels=0: must be an integer >= 1"),
        ("trace_buffer_records", 2.5, r"trace_buffer_records=2.5: must be an integer >= 1"),
        ("tuning_queue_size", 4.0, r"RuntimeConfig.tuning_queue_size=4.0: must be an integer"),
        ("tuning_workers", -1, r"RuntimeConfig.tuning_workers=-1"),
        ("tuning_queue_size", 0, r"RuntimeConfig.tuning_queue_size=0"),
        ("trace_buffer_records", True, r"RuntimeConfig.trace_buffer_records=True"),
    ],
)
def test_invalid_fields_name_the_field_and_rule(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RuntimeConfig(**{field: value})  # type: ignore[arg-type]


def test_config_is_keyword_only_and_coerces_paths(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        RuntimeConfig("emulator")  # type: ignore[misc]
    config = RuntimeConfig(trace_path=str(tmp_path / "t.jsonl"), cache_dirs=[str(tmp_path)])  # type: ignore[arg-type]
    assert config.trace_path == tmp_path / "t.jsonl" and config.cache_dirs == (tmp_path,)
    # One directory given as a plain path is that directory, not one layer per character.
    assert RuntimeConfig(cache_dirs=str(tmp_path)).cache_dirs == (tmp_path,)  # type: ignore[arg-type]
    assert RuntimeConfig(cache_dirs=tmp_path).cache_dirs == (tmp_path,)  # type: ignore[arg-type]


def test_device_shorthand_overrides_the_config() -> None:
    rt = Runtime(config=RuntimeConfig(tier3_min_calls=7), device="emulator")
    assert rt.device == "emulator" and rt.config.tier3_min_calls == 7
    assert Runtime(device="cpu").device == "cpu"
    assert Runtime(backends=FakeBackends()).config == RuntimeConfig()


def test_auto_without_a_gpu_is_cpu_and_cuda_is_refused() -> None:
    from generator.gpu import probe

    if probe().available:
        pytest.skip("this machine has a GPU: 'auto' means cuda here")
    assert Runtime().device == "cpu"
    with pytest.raises(NoDeviceError, match="device='cuda' but no usable GPU"):
        Runtime(device="cuda")
