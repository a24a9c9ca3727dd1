"""One process per GPU sharing a kernel cache: one tunes a hot signature, the others load it."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_fakes import CONFIG, FakeBackends, FakeKernel, qkv

from autotune.hotspots import load_trace
from cache.store import KernelCache
from runtime import Runtime, RuntimeConfig
from runtime.dispatcher import TUNED_ELSEWHERE
from runtime.tiers import Kernel, Tier
from tessera_core import config
from tessera_core.types import Problem

RANKS = 3


class SharedCacheBackends(FakeBackends):
    """Fake kernels, but the specialized ones live in a real cache directory on disk.

    `tune` stores an entry after every rank has asked for the tune (a marker file per rank in
    `asked_dir`), so without a cross-process single flight every rank would be tuning at once.
    """

    def __init__(self, cache_dir: Path, asked_dir: Path) -> None:
        super().__init__()
        self.cache = KernelCache(cache_dir=cache_dir)
        self.asked_dir = asked_dir

    def specialized(self, problem: Problem) -> Kernel | None:
        key = problem.kernel_key(self.arch)
        if self.cache.get(key) is None:
            return None
        return FakeKernel(Tier.SPECIALIZED, kernel_key=key, config=CONFIG)

    def tune(self, problem: Problem) -> None:
        deadline = time.monotonic() + 30.0
        while len(list(self.asked_dir.iterdir())) < RANKS and time.monotonic() < deadline:
            time.sleep(0.01)
        key = problem.kernel_key(self.arch)
        self.tuned.append(key)
        self.cache.put(
            key,
            cubin=b"fake cubin",
            ptx=None,
            metadata={"arch": self.arch, "config": CONFIG.to_dict()},
        )


def _rank_main(rank: int, cache_dir: str, asked_dir: str, trace_path: str, out: str) -> None:
    os.environ["TESSERA_RANK"] = str(rank)  # as torchrun sets RANK for each process
    backends = SharedCacheBackends(Path(cache_dir), Path(asked_dir))
    settings = RuntimeConfig(
        tier2=False,
        tier3_min_calls=0,
        tuning_workers=1,
        cache_dirs=(Path(cache_dir),),
        trace_path=Path(trace_path),
    )
    rt = Runtime(config=settings, backends=backends)  # type: ignore[arg-type]
    q, k, v = qkv()
    rt.attention(q, k, v)  # the signature is hot at once: its tune is queued
    (Path(asked_dir) / str(rank)).touch()
    assert rt.wait_for_tuning(60)
    result = rt.attention(q, k, v)
    rt.close()
    tier = float(np.asarray(result[0] if isinstance(result, tuple) else result).flat[0])
    Path(out).write_text(json.dumps({"tuned": len(backends.tuned), "tier": tier}))


def test_a_hot_signature_is_tuned_by_one_process_and_loaded_by_the_others(
    tmp_path: Path,
) -> None:
    cache_dir, asked_dir = tmp_path / "kernels", tmp_path / "asked"
    asked_dir.mkdir()
    trace_path = tmp_path / "trace.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(rank, str(cache_dir), str(asked_dir), str(trace_path), str(tmp_path / f"{rank}")),
        )
        for rank in range(RANKS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    results = [json.loads((tmp_path / f"{rank}").read_text()) for rank in range(RANKS)]
    assert sum(r["tuned"] for r in results) == 1, results
    assert all(r["tier"] == float(Tier.SPECIALIZED) for r in results), results
    records = load_trace(trace_path)
    assert {r.rank for r in records} == set(range(RANKS))
    for rank in range(RANKS):  # a rank's records all come from one process
        assert len({r.pid for r in records if r.rank == rank}) == 1
    outcomes = sorted(r.detail for r in records if r.event == "tune" and r.detail != "queued")
    assert outcomes == ["finished"] + [TUNED_ELSEWHERE] * (RANKS - 1)


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, None),
        ({"LOCAL_RANK": "2"}, 2),
        ({"RANK": "5", "LOCAL_RANK": "1"}, 5),
        ({"TESSERA_RANK": "7", "RANK": "5"}, 7),
    ],
)
def test_the_process_rank_comes_from_tessera_rank_else_torchrun(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], rank: int | None
) -> None:
    for name in ("TESSERA_RANK", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.process_rank() == rank
    rt = Runtime(config=RuntimeConfig(tier2=False, tier3=False), backends=FakeBackends())  # type: ignore[arg-type]
    q, k, v = qkv()
    rt.attention(q, k, v)
    (record,) = rt.history()
    assert record.rank == rank
    assert json.loads(record.to_json())["rank"] == rank
    rt.close()


def test_a_malformed_rank_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(ValueError, match="RANK='first'"):
        config.process_rank()
