"""One search shared by many workers through an Optuna storage: open it, keep trials alive, reap.

There is no coordinator: every worker reads and writes the same Optuna study (an RDB such as
sqlite or PostgreSQL, or a journal file), and autotune.strategy.Searcher takes its budget and
the configurations already taken from it. What Optuna does not give every storage is added
here: a worker's running trials carry a heartbeat (a user attr refreshed by a thread), and a
running trial whose heartbeat is older than `stale_after_s` is failed by whichever worker
notices and re-enqueued once (Optuna's RetryHeartbeatStaleTrialCallback), so a killed worker never
stalls the others. Optuna's own heartbeat exists only for RDB storages; one mechanism for
all storages keeps the journal file and PostgreSQL paths the same.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any

import filelock
import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import Trial, TrialState

HEARTBEAT_ATTR = "heartbeat_s"
DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_STALE_AFTER_S = 60.0
URL_FORMS = "sqlite:///FILE, journal:///PATH, or an RDB URL such as postgresql://USER@HOST/DB"
OPEN_ATTEMPTS = 5
RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")

Clock = Callable[[], float]


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage a URL names; ValueError naming the URL and the accepted forms."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.split("+")[0].lower()
    if not sep or not rest:
        raise ValueError(f"--storage {url!r}: expected {URL_FORMS}")
    if scheme == "journal":
        path = Path(rest)
        if not path.parent.is_dir():
            raise ValueError(f"--storage {url!r}: directory {path.parent} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if scheme in RDB_SCHEMES:
        # sqlite serialises writers with a file lock: wait for it rather than fail at once.
        kwargs = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else None
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:
            raise ValueError(
                f"--storage {url!r}: the database driver is missing ({exc}); for PostgreSQL "
                'install it with pip install -e ".[postgres]"'
            ) from None
    raise ValueError(f"--storage {url!r}: unknown scheme {scheme!r}; expected {URL_FORMS}")


# The claim lock of each study opened here (see claim_lock), keyed weakly by the study.
_CLAIM_LOCKS: weakref.WeakKeyDictionary[optuna.Study, Callable[[], ContextManager[object]]] = (
    weakref.WeakKeyDictionary()
)


def claim_lock(study: optuna.Study | None) -> Callable[[], ContextManager[object]]:
    """The lock a worker holds from reading the study's claims to writing its own, so two
    workers can never claim one configuration: a file lock beside a journal or SQLite file, a
    PostgreSQL advisory lock on the study's name; no lock for a study of this process only."""
    if study is None:
        return contextlib.nullcontext
    return _CLAIM_LOCKS.get(study, contextlib.nullcontext)


def _make_claim_lock(url: str, name: str) -> Callable[[], ContextManager[object]]:
    scheme, _, rest = url.partition("://")
    scheme = scheme.split("+")[0].lower()
    if scheme in ("journal", "sqlite"):
        path = rest.removeprefix("/") if scheme == "sqlite" else rest
        lock = filelock.FileLock(f"{path}.claims.lock")
        return lambda: lock
    if scheme.startswith("postgres"):
        return functools.partial(_pg_advisory_lock, url, name)
    return contextlib.nullcontext


@contextlib.contextmanager
def _pg_advisory_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    engine = _pg_engines.get(url) or _pg_engines.setdefault(url, sqlalchemy.create_engine(url))
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


_pg_engines: dict[str, Any] = {}


def open_study(url: str, name: str) -> optuna.Study:
    """Create the study `name` in the storage at `url`, or load it if it exists (resume)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            study = optuna.create_study(
                storage=open_storage(url),
                study_name=name,
                direction="minimize",
                load_if_exists=True,
            )
            _CLAIM_LOCKS[study] = _make_claim_lock(url, name)
            return study
        except Exception as exc:
            # Workers starting together race to create the RDB schema ("table already
            # exists"): the loser opens what the winner made.
            if type(exc).__module__.split(".")[0] != "sqlalchemy" or attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def fail_stale_trials(
    study: optuna.Study, *, stale_after_s: float, clock: Clock = time.time
) -> list[int]:
    """Fail and re-enqueue (once) running trials whose heartbeat stopped; their numbers."""
    now = clock()
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.user_attrs.get(HEARTBEAT_ATTR)
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.timestamp()
        if beat is None or now - float(beat) <= stale_after_s:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker failed it first
            continue
        retry(study, study.get_trials(deepcopy=False)[trial.number])
        failed.append(trial.number)
    return failed


@contextlib.contextmanager
def heartbeat(
    trials: Sequence[Trial], *, interval_s: float = DEFAULT_HEARTBEAT_S, clock: Clock = time.time
) -> Iterator[None]:
    """Keep `trials` alive while the block runs (a daemon thread beats every `interval_s`)."""
    stop = threading.Event()

    def beat() -> None:
        for trial in trials:
            with contextlib.suppress(Exception):  # finished meanwhile: nothing to keep alive
                trial.set_user_attr(HEARTBEAT_ATTR, clock())

    def loop() -> None:
        while not stop.wait(interval_s):
            beat()

    beat()
    thread = threading.Thread(target=loop, name="tessera-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def wait_until_settled(
    study: optuna.Study,
    *,
    stale_after_s: float,
    poll_s: float = 1.0,
    clock: Clock = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once no trial of `study` is running or waiting (stale ones are failed meanwhile)."""
    while True:
        fail_stale_trials(study, stale_after_s=stale_after_s, clock=clock)
        busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not busy:
            return
        sleep(poll_s)
