"""`python -m cache`: every subcommand runs, on real cache directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cache_workers import metadata_for, payload_for, put_version

from cache import KernelCache
from cache.__main__ import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["gemm.fp16.m64.n64.k64.sm_80", "gemm.fp16.m128.n64.k64.sm_80"]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "kernels"
    cache = KernelCache(cache_dir=path, read_only_dirs=())
    for key in KEYS:
        put_version(cache, key, "v1")
    return path


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cache", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ls_runs_as_a_module_and_prints_the_columns(filled: Path) -> None:
    result = _cli("--cache-dir", str(filled), "ls")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "key", "config", "objective", "kernel_ms", "TFLOP/s", "bytes", "created", "last_used"
    ]  # fmt: skip
    assert sorted(r.split()[0] for r in rows) == sorted(KEYS)
    assert all(r.split()[1:4] == ["m64n64k32w4s2", "-", "0.5"] for r in rows)


def test_ls_shows_kernel_time_tflops_and_whether_measured_or_modelled(filled: Path) -> None:
    cache = KernelCache(cache_dir=filled, read_only_dirs=())
    problem = {"op": "gemm", "m": 4096, "n": 4096, "k": 4096, "dtype": "fp16"}  # 137.4 GFLOP
    for key, objective in [
        (
            "gemm.fp16.m4096.n4096.k4096.sm_80",
            {"kind": "measured", "time_ms": 1.0, "tflops": 137.4},
        ),
        ("gemm.fp16.m4096.n4096.k4096.sm_90", {"kind": "model", "time_ms": 0.5}),  # no tflops
    ]:
        cubin, ptx = payload_for(key, "v")
        meta = {**metadata_for("v"), "problem": problem, "objective": objective}
        cache.put(key, cubin=cubin, ptx=ptx, metadata=meta)
    result = _cli("ls", "--cache-dir", str(filled))
    assert result.returncode == 0, result.stderr
    cells = {r.split()[0]: r.split()[2:5] for r in result.stdout.splitlines()[1:]}
    assert cells["gemm.fp16.m4096.n4096.k4096.sm_80"] == ["measured", "1", "137.4"]
    assert cells["gemm.fp16.m4096.n4096.k4096.sm_90"] == ["modelled", "0.5", "274.9"]


def test_global_options_are_accepted_after_the_subcommand(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--cache-dir", str(filled)]) == 0
    assert sorted(r.split()[0] for r in capsys.readouterr().out.splitlines()[1:]) == sorted(KEYS)
    # After the subcommand wins; absent after it, the value before it stands.
    assert main(["--cache-dir", str(tmp_path / "empty"), "ls", "--cache-dir", str(filled)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(KEYS)
    assert main(["--cache-dir", str(filled), "show", KEYS[0]]) == 0
    assert (
        main(["show", KEYS[0], "--cache-dir", str(tmp_path / "empty"), "--layer", str(filled)]) == 0
    )
    assert "(read-only)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["prune", "--max-bytes", "-1"], {}, "--max-bytes"),
        (["prune", "--max-entries", "x"], {}, "--max-entries"),
        (["bogus"], {}, "COMMAND"),
        ([], {}, "COMMAND"),
        (["show"], {}, "key"),
        (["export", "out.tar.gz"], {}, "--keys"),
        (["show", "../../etc/passwd"], {}, "kernel_key"),
        (["ls"], {"TESSERA_CACHE_MAX_BYTES": "0"}, "TESSERA_CACHE_MAX_BYTES"),
        (["ls"], {"TESSERA_CACHE_MAX_BYTES": "-5"}, "TESSERA_CACHE_MAX_BYTES"),
        (["ls"], {"TESSERA_CACHE_MAX_BYTES": "abc"}, "TESSERA_CACHE_MAX_BYTES"),
        (["ls"], {"TESSERA_CACHE_MAX_ENTRIES": "1.5"}, "TESSERA_CACHE_MAX_ENTRIES"),
        (["import", "/nonexistent/b.tar.gz"], {}, "/nonexistent/b.tar.gz"),
    ],
)
def test_every_bad_argument_is_one_line_and_exit_2(
    filled: Path, args: list[str], env: dict[str, str], names: str
) -> None:
    result = _cli(*args, "--cache-dir", str(filled), **env) if args else _cli(**env)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "error:" in lines[0], result.stderr


def test_a_broken_pipe_ends_quietly(filled: Path) -> None:
    cache = KernelCache(cache_dir=filled, read_only_dirs=())
    for i in range(40):  # more rows than `head -1` reads
        put_version(cache, f"gemm.fp16.m{i + 1}.n8.k8.sm_80", "v")
    reader = subprocess.Popen(
        [sys.executable, "-m", "cache", "--cache-dir", str(filled), "ls"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # the reader of stdout went away before a byte was written
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 141
    assert stderr == ""


def test_ctrl_c_is_one_line_and_exit_130(
    filled: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(COMMANDS, "verify", interrupted)
    assert main(["--cache-dir", str(filled), "verify"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "python -m cache: interrupted\n" and captured.out == ""


def test_show_verify_prune_clear(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--cache-dir", str(filled)]
    assert main([*base, "show", KEYS[0]]) == 0
    assert '"version": "v1"' in capsys.readouterr().out
    assert main([*base, "show", "gemm.fp16.m1.n1.k1.sm_80"]) == 2
    assert "no cached kernel" in capsys.readouterr().err

    assert main([*base, "verify"]) == 0
    bad = filled / "v1" / "entries" / f"{KEYS[1]}.kernel"
    bad.write_bytes(bad.read_bytes()[:-3])
    assert main([*base, "verify"]) == 1
    assert f"BAD {KEYS[1]}" in capsys.readouterr().out
    assert not bad.exists()

    put_version(KernelCache(cache_dir=filled, read_only_dirs=()), KEYS[1], "v2")
    assert main([*base, "prune", "--max-entries", "1"]) == 0
    assert "1 entries evicted" in capsys.readouterr().out
    assert len(KernelCache(cache_dir=filled, read_only_dirs=()).list_keys()) == 1
    assert main([*base, "clear"]) == 0
    assert KernelCache(cache_dir=filled, read_only_dirs=()).list_keys() == []


def test_export_and_import(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b.tar.gz"
    assert main(["--cache-dir", str(filled), "export", str(bundle), "--all"]) == 0
    into = tmp_path / "into"
    assert (
        main(["--cache-dir", str(tmp_path / "unused"), "import", str(bundle), "--into", str(into)])
        == 0
    )
    assert "2 imported" in capsys.readouterr().out
    assert KernelCache(cache_dir=into, read_only_dirs=()).list_keys() == sorted(KEYS)
    bundle.write_bytes(b"junk")
    assert main(["--cache-dir", str(into), "import", str(bundle)]) == 2
    assert "refused" in capsys.readouterr().err


def test_prune_refuses_a_negative_limit(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--max-bytes", "--max-entries"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--cache-dir", str(filled), "prune", option, "-1"])
        assert exit_info.value.code == 2
        assert "expected an integer >= 0" in capsys.readouterr().err
    assert KernelCache(cache_dir=filled, read_only_dirs=()).list_keys() == sorted(KEYS)


def test_verify_says_when_a_bad_entry_could_not_be_quarantined(
    filled: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = filled / "v1" / "entries" / f"{KEYS[1]}.kernel"
    bad.write_bytes(bad.read_bytes()[:-3])
    monkeypatch.setattr("cache.inventory.quarantine", lambda *args: False)  # e.g. read-only fs
    assert main(["--cache-dir", str(filled), "verify"]) == 1
    out = capsys.readouterr().out
    assert "could not be quarantined" in out and "read-only layer" not in out


def test_verify_counts_a_bad_read_only_entry_as_bad_only(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = filled / "v1" / "entries" / f"{KEYS[1]}.kernel"
    bad.write_bytes(bad.read_bytes()[:-3])
    empty = tmp_path / "empty"
    assert main(["--cache-dir", str(empty), "--layer", str(filled), "verify"]) == 1
    out = capsys.readouterr().out
    assert "left in place (read-only layer)" in out and bad.exists()
    assert "1 entries ok, 1 bad" in out
