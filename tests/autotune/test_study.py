"""Many workers on one Optuna study: journal file, sqlite and PostgreSQL storages, dead workers."""

from __future__ import annotations

import glob
import importlib.util
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from autotune.search import tune
from autotune.strategy import Searcher, spent
from autotune.study import HEARTBEAT_ATTR, fail_stale_trials, open_storage, open_study
from tests.autotune.test_search import ARCH, PROBLEM, FakeCompiler, SyntheticObjective, make_space

BUDGET = 12


def _worker(url: str, name: str, seed: int) -> None:
    tune(
        PROBLEM,
        arch=ARCH,
        trials=BUDGET,
        seed=seed,
        jobs=2,
        progress=False,
        objective=SyntheticObjective(),
        compile_fn=FakeCompiler(),
        space=make_space(wide=True),
        study=open_study(url, name),
    )


def _run_workers(url: str, name: str, n: int = 3) -> optuna.Study:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(url, name, seed)) for seed in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
    assert [w.exitcode for w in workers] == [0] * n
    return open_study(url, name)


def _check_shared_search(study: optuna.Study) -> None:
    evaluated = [t for t in study.get_trials() if spent(t)]
    assert len(evaluated) == BUDGET  # the budget is the study's total, not each worker's
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in evaluated)
    configs = [tuple(sorted(t.params.items())) for t in evaluated]
    assert len(set(configs)) == len(configs)  # no configuration evaluated twice


def test_three_workers_share_one_journal_study(tmp_path: Path) -> None:
    study = _run_workers(f"journal:///{tmp_path}/study.log", "gemm")
    _check_shared_search(study)


def test_three_workers_share_one_sqlite_study(tmp_path: Path) -> None:
    study = _run_workers(f"sqlite:///{tmp_path}/study.db", "gemm")
    _check_shared_search(study)


def test_a_dead_workers_trial_is_failed_retried_and_the_others_finish(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path}/study.log"
    study = open_study(url, "gemm")
    space = make_space(wide=True)
    from autotune.search import family_search_space

    dead = Searcher(family_search_space(space, PROBLEM, ARCH), seed=9, budget=BUDGET, study=study)
    orphan = dead.ask()  # a worker that opened a trial and was killed: it never tells
    assert orphan is not None
    orphan.trial.set_user_attr(HEARTBEAT_ATTR, time.time() - 3600)
    assert fail_stale_trials(study, stale_after_s=3600 + 60) == []  # still within its grace
    _worker(url, "gemm", seed=1)  # a live worker fails the stale trial and the retry runs
    final = open_study(url, "gemm")
    states = {t.number: t.state for t in final.get_trials()}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    retried = [t for t in final.get_trials() if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == orphan.params
    _check_shared_search(final)


def test_resuming_after_every_worker_died_continues_where_it_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    tune(
        PROBLEM,
        arch=ARCH,
        trials=5,
        seed=0,
        jobs=1,
        progress=False,
        objective=SyntheticObjective(),
        compile_fn=FakeCompiler(),
        space=make_space(wide=True),
        study=open_study(url, "gemm"),
    )
    first = {t.number: t.params for t in open_study(url, "gemm").get_trials() if spent(t)}
    assert len(first) == 5
    _worker(url, "gemm", seed=0)  # the same seed: the resumed search must not repeat itself
    final = open_study(url, "gemm")
    assert {t.number: t.params for t in final.get_trials()[:5]} == first
    _check_shared_search(final)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("study.db", "expected sqlite:///FILE, journal:///PATH"),
        ("redis://localhost/0", "unknown scheme 'redis'"),
        ("journal:///no/such/dir/study.log", "directory /no/such/dir does not exist"),
    ],
)
def test_bad_storage_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_storage(url)


def test_cli_runs_three_workers_on_a_journal_study_and_stores_the_winner(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "study.log"
    args = [sys.executable, "-m", "generator.tune", "--op", "gemm", "--shape", "64x64x64"]
    args += ["--trials", "6", "--workers", "3", "--storage", f"journal:///{log}", "--json"]
    args += ["--cache-dir", str(tmp_path / "kernels"), "--jobs", "1", "--arch", "sm_80"]
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    assert '"cache_hit": true' in done.stdout  # the parent serves what one worker stored
    study = open_study(f"journal:///{log}", "gemm.fp16.m64.n64.k64.sm_80")
    _check_budget = [t for t in study.get_trials() if spent(t)]
    assert len(_check_budget) == 6
    assert len({tuple(sorted(t.params.items())) for t in _check_budget}) == 6
    entries = list((tmp_path / "kernels").rglob("*.kernel"))
    assert len(entries) == 1
    bad = subprocess.run(
        [*args[:7], "--workers", "2"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "need --storage" in bad.stderr


# ------------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on a free port, run as an unprivileged user."""
    pg_ctl, initdb = _pg_bin("pg_ctl"), _pg_bin("initdb")
    reason = None
    if pg_ctl is None or initdb is None:
        reason = "pg_ctl/initdb not found (install PostgreSQL: apt-get install -y postgresql)"
    elif importlib.util.find_spec("psycopg") is None:
        reason = 'the PostgreSQL driver is missing: pip install -e ".[postgres]"'
    if reason is not None:
        if os.environ.get("CI") == "true":  # CI installs both (.ci/run): never skip there
            pytest.fail(f"CI must run the PostgreSQL test: {reason}")
        pytest.skip(reason)
    assert pg_ctl is not None and initdb is not None
    run_as: list[str] = []
    # Not under pytest's tmp dir: as root that is private to root, and the server runs as
    # the unprivileged user below.
    data = Path(tempfile.mkdtemp(prefix="tessera-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, user="postgres")
        data.chmod(0o700)
    port = _free_port()
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "tessera", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(data / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://tessera@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)


def test_three_workers_share_one_postgresql_study(postgres_url: str) -> None:
    study = _run_workers(postgres_url, "gemm")
    _check_shared_search(study)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2"], "--workers and --study-name need --storage URL"),
        (["--study-name", "s"], "--workers and --study-name need --storage URL"),
        (["--storage", "redis://h/0"], "unknown scheme 'redis'"),
        (["--warm-start", "/no/such/records.json"], "--warm-start /no/such/records.json: no such"),
    ],
)
def test_tune_cli_refuses_bad_distributed_arguments_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from generator.tune import main

    with pytest.raises(SystemExit) as exited:
        main(["--op", "gemm", "--shape", "64x64x64", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err
