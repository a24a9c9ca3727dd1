"""The trace: ring buffer, JSONL file round trip, several processes appending to one file."""

from __future__ import annotations

import gc
import json
import multiprocessing
import weakref
from pathlib import Path

import pytest
from runtime_fakes import FakeBackends, qkv

from autotune.hotspots import load_trace
from runtime import Runtime, RuntimeConfig
from runtime.signature import Signature
from runtime.trace import Tracer

RECORDS_PER_PROCESS = 200


def test_ring_buffer_keeps_the_newest_records() -> None:
    tracer = Tracer(buffer_records=3)
    sig = Signature("gemm", "fp16", (4, 8, 16))
    for i in range(5):
        tracer.append(float(i), "call", sig, 1, 0.5)
    assert [r.time_s for r in tracer.history()] == [2.0, 3.0, 4.0]


def test_trace_file_round_trips_every_field(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    backends = FakeBackends()
    config = RuntimeConfig(trace_path=path, tier2_min_calls=1, tier3=False)
    with Runtime(config=config, backends=backends) as rt:
        q, k, v = qkv()
        for _ in range(3):
            rt.attention(q, k, v, causal=True, scale=0.5)
        history = rt.history()
    assert load_trace(path) == history
    assert [r.event for r in history] == ["call", "promote", "call", "call"]
    last = history[-1]
    assert last.tier == 2 and last.kernel_key == "attention_fwd.fp16.d16.causal.sm_90.generic"
    assert last.config is not None and last.config["block_m"] == 64
    assert last.shape == (1, 2, 16, 16, 16) and last.scale == 0.5 and last.causal
    assert last.wall_ms > 0 and last.time_s > 1e9


def test_batched_flush_writes_on_close(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    config = RuntimeConfig(trace_path=path, trace_flush_records=100, tier2=False, tier3=False)
    rt = Runtime(config=config, backends=FakeBackends())
    q, k, v = qkv()
    for _ in range(5):
        rt.attention(q, k, v)
    assert not path.exists() or path.read_text() == ""
    rt.close()
    assert len(load_trace(path)) == 5


def _append_records(path: str, tag: int) -> None:
    tracer = Tracer(buffer_records=10, path=Path(path), flush_records=7)
    sig = Signature("attention", "fp16", (1, 1, 64, 64, 64), False, float(tag))
    for i in range(RECORDS_PER_PROCESS):
        tracer.append(float(i), "call", sig, 1, 1.0, detail="x" * 300)
    tracer.flush()


def test_several_processes_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_records, args=(str(path), tag)) for tag in (1, 2, 3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 3 * RECORDS_PER_PROCESS
    records = [json.loads(line) for line in lines]  # a torn or interleaved line fails here
    for tag in (1.0, 2.0, 3.0):
        mine = [r["time_s"] for r in records if r["scale"] == tag]
        assert mine == [float(i) for i in range(RECORDS_PER_PROCESS)]


def test_load_trace_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    tracer = Tracer(buffer_records=10, path=path)
    tracer.append(1.0, "call", Signature("gemm", "bf16", (8, 8, 8)), 2, 0.25)
    with path.open("a") as handle:
        handle.write('{"time_s": 2.0, "event": "ca')
    (record,) = load_trace(path)
    assert record.dtype == "bf16" and record.tier == 2


def test_a_line_torn_by_a_dead_writer_costs_only_that_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text('{"time_s": 2.0, "event": "ca')  # a writer killed mid-line
    tracer = Tracer(buffer_records=10, path=path)
    tracer.append(3.0, "call", Signature("gemm", "fp16", (8, 8, 8)), 1, 0.5)
    tracer.append(4.0, "call", Signature("gemm", "fp16", (8, 8, 8)), 1, 0.5)
    assert [r.time_s for r in load_trace(path)] == [3.0, 4.0]


def test_an_unwritable_trace_file_never_fails_a_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "trace.jsonl"
    config = RuntimeConfig(trace_path=path, tier2=False, tier3=False)
    with Runtime(config=config, backends=FakeBackends()) as rt:
        q, k, v = qkv()
        rt.attention(q, k, v)
        path.unlink()
        path.mkdir()  # any write now fails, as on a full or read-only disk
        out = rt.attention(q, k, v)
        assert out.shape == q.shape
        assert rt.stats().total_calls == 2
    assert "could not write 1 record(s)" in caplog.text


def test_close_releases_the_exit_hook_of_a_batched_tracer(tmp_path: Path) -> None:
    tracer = Tracer(buffer_records=10, path=tmp_path / "t.jsonl", flush_records=10)
    tracer.append(1.0, "call", Signature("gemm", "fp16", (8, 8, 8)), 1, 0.5)
    tracer.close()
    assert len(load_trace(tmp_path / "t.jsonl")) == 1
    tracer.append(2.0, "call", Signature("gemm", "fp16", (8, 8, 8)), 1, 0.5)  # after close
    assert len(load_trace(tmp_path / "t.jsonl")) == 2, "no exit hook is left to write it"
    ref = weakref.ref(tracer)
    del tracer
    gc.collect()
    assert ref() is None, "atexit still holds the closed tracer"
