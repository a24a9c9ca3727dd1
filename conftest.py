"""Root pytest hooks shared by tests/ and benchmarks/: GPU-marked items skip with a reason."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from generator.gpu import probe

    gpu = probe()
    if gpu.available:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {gpu.reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
