"""The default job store: one SQLite file in WAL mode, stdlib ``sqlite3``, nothing to install.

Rule 1: SQL and nothing else; what the states mean and when a job runs is the component's.

Why these settings:

* WAL (write-ahead log): a commit appends to the log instead of rewriting pages, so the fsync a
  commit costs is one sequential write; reads never wait on writes.
* ``locking_mode=EXCLUSIVE``: the server takes the file's lock at start-up and keeps it. Two
  servers on one store would both run its jobs; the second one now fails to start, with a
  message, instead. (Also, WAL then needs no shared-memory file.)
* ``synchronous`` is the ``store_sync`` option: ``full`` fsyncs the log at every commit (a job
  acknowledged survives a power cut); ``normal`` fsyncs it at checkpoints only (it survives the
  process being killed, but the last commits may be lost if the machine loses power).
* ``PRAGMA quick_check`` at start-up: a damaged file is refused at once, with a message, not
  discovered by a query in the middle of a run.

The jobs per state are counted once, at start-up, then kept in memory as each write moves jobs
(:meth:`SqliteStore.counts` is asked on every status request and scrape: a ``count(*)`` over a
store of millions of rows is not).

The schema (``PRAGMA user_version`` 1) is in docs/durable.md.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Final

from .store import (
    FINISHED,
    JobState,
    NewJob,
    Outcome,
    Recovered,
    Runnable,
    StoreError,
    pack_frames,
    unpack_frames,
)

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    id       INTEGER PRIMARY KEY,
    uuid     TEXT NOT NULL UNIQUE,
    service  BLOB NOT NULL,
    body     BLOB NOT NULL,
    state    TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retries  INTEGER NOT NULL,
    backoff  REAL NOT NULL,
    eta      REAL NOT NULL,
    result   BLOB,
    error    TEXT NOT NULL DEFAULT '',
    created  REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, eta);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished) WHERE finished IS NOT NULL;
"""

#: Ids per ``IN (...)`` list: well under SQLite's limit on bound parameters.
_CHUNK: Final = 500

_WAITING: Final = (JobState.PENDING.value, JobState.SCHEDULED.value)


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


class SqliteStore:
    """A :class:`~.store.JobStore` in one SQLite file (created if absent)."""

    def __init__(self, path: str, sync: str = "full") -> None:
        """Open (or create) the store at ``path``; :class:`StoreError` if it cannot be used:
        a directory that does not exist, a file that is not a SQLite database or is damaged,
        a store another process has open."""
        self.path = path
        if sync not in ("full", "normal"):
            raise StoreError(f"store_sync must be full or normal, not {sync!r}")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(f"cannot open the store {path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise StoreError(
                f"cannot write the store {path}: directory {parent} is not writable by this "
                "user (the server writes the store and its -wal log there)"
            )
        try:
            # Autocommit mode: transactions are ours (BEGIN on the first write, COMMIT in
            # commit()), never opened behind our back by the module.
            self.db = sqlite3.connect(path, isolation_level=None, timeout=0.5)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        try:
            self._setup(sync)
        except sqlite3.OperationalError as exc:
            self.db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"the store {path} is locked by another process (is another server "
                    f"running on it?): {exc}"
                ) from exc
            if "unable to open" in str(exc) or "readonly" in str(exc):
                raise StoreError(
                    f"cannot write the store {path} ({exc}): the server needs to create and "
                    f"write files in {parent} (the store and its -wal log); is the directory "
                    "or the file read-only, or owned by another user?"
                ) from exc
            raise StoreError(f"cannot use the store {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(
                f"the store {path} is not a usable SQLite database ({exc}); move it away to "
                "start with an empty store, or restore it from a copy"
            ) from exc
        #: Jobs per state, kept as each write moves them (see the module's docstring).
        self._counts = self.count_rows()

    def _setup(self, sync: str) -> None:
        db = self.db
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous={sync.upper()}")
        # Take the exclusive lock now (a write transaction keeps it in EXCLUSIVE mode).
        db.execute("BEGIN IMMEDIATE")
        checked = db.execute("PRAGMA quick_check").fetchall()
        if checked != [("ok",)]:
            problems = "; ".join(str(row[0]) for row in checked[:3])
            raise sqlite3.DatabaseError(f"integrity check failed: {problems}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} was written by a newer zmqserver "
                f"(this one knows {SCHEMA_VERSION})"
            )
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")

    # -- writes (grouped until commit) --------------------------------------------------------

    def _write(self) -> sqlite3.Connection:
        db = self.db
        if not db.in_transaction:
            db.execute("BEGIN")
        return db

    def recover(self) -> Recovered:
        db = self._write()
        # A run the stop interrupted is not held against the job's retries.
        interrupted = db.execute(
            "UPDATE jobs SET state = ?, attempts = max(attempts - 1, 0) WHERE state = ?",
            (JobState.PENDING.value, JobState.RUNNING.value),
        ).rowcount
        self._move(JobState.RUNNING, JobState.PENDING, interrupted)
        ready = [
            row[0]
            for row in db.execute(
                "SELECT id FROM jobs WHERE state = ? ORDER BY id", (JobState.PENDING.value,)
            )
        ]
        scheduled = [
            (row[0], row[1])
            for row in db.execute(
                "SELECT eta, id FROM jobs WHERE state = ?", (JobState.SCHEDULED.value,)
            )
        ]
        oldest = db.execute("SELECT min(finished) FROM jobs WHERE finished IS NOT NULL")
        self.commit()
        return Recovered(ready, scheduled, interrupted, oldest.fetchone()[0])

    def add(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, float] | None]:
        db = self._write()
        stored: list[tuple[int, float] | None] = []
        for job in jobs:
            start = job.options.start_at(now)
            state = JobState.PENDING if start <= now else JobState.SCHEDULED
            cursor = db.execute(
                "INSERT INTO jobs (uuid, service, body, state, retries, backoff, eta, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO NOTHING",
                (
                    job.ticket,
                    job.service,
                    pack_frames(job.body),
                    state.value,
                    job.options.retries,
                    job.options.backoff,
                    start,
                    now,
                ),
            )
            if cursor.rowcount == 1 and cursor.lastrowid is not None:
                stored.append((cursor.lastrowid, start))
                self._counts[state] += 1
            else:
                stored.append(None)  # a resend of a stored ticket
        return stored

    def start(self, ids: Sequence[int]) -> list[Runnable]:
        db = self._write()
        found: list[Runnable] = []
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                "SELECT id, uuid, service, body, attempts, retries, backoff, state FROM jobs "
                f"WHERE id IN ({marks}) AND state IN (?, ?) ORDER BY id",
                (*chunk, *_WAITING),
            ).fetchall()
            if not rows:
                continue
            started = [row[0] for row in rows]
            db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1 "
                f"WHERE id IN ({','.join('?' * len(started))})",
                (JobState.RUNNING.value, *started),
            )
            for job_id, ticket, service, body, attempts, retries, backoff, state in rows:
                self._move(JobState(state), JobState.RUNNING)
                found.append(
                    Runnable(
                        job_id,
                        ticket,
                        bytes(service),
                        unpack_frames(body),
                        attempts + 1,
                        retries,
                        backoff,
                    )
                )
        return found

    def finish(self, job_id: int, result: list[bytes], now: float) -> bool:
        cursor = self._write().execute(
            "UPDATE jobs SET state = ?, result = ?, error = '', finished = ? "
            "WHERE id = ? AND state = ?",
            (JobState.DONE.value, pack_frames(result), now, job_id, JobState.RUNNING.value),
        )
        self._move(JobState.RUNNING, JobState.DONE, cursor.rowcount)
        return cursor.rowcount == 1

    def reschedule(self, job_id: int, eta: float, error: str, *, attempt: bool) -> None:
        cursor = self._write().execute(
            "UPDATE jobs SET state = ?, eta = ?, error = ?, attempts = attempts - ? "
            "WHERE id = ? AND state = ?",
            (
                JobState.SCHEDULED.value,
                eta,
                error,
                0 if attempt else 1,
                job_id,
                JobState.RUNNING.value,
            ),
        )
        self._move(JobState.RUNNING, JobState.SCHEDULED, cursor.rowcount)

    def bury(self, job_id: int, error: str, now: float) -> bool:
        cursor = self._write().execute(
            "UPDATE jobs SET state = ?, error = ?, finished = ? WHERE id = ? AND state = ?",
            (JobState.DEAD.value, error, now, job_id, JobState.RUNNING.value),
        )
        self._move(JobState.RUNNING, JobState.DEAD, cursor.rowcount)
        return cursor.rowcount == 1

    def forget(self, ticket: str) -> None:
        db = self._write()
        row = db.execute("SELECT state FROM jobs WHERE uuid = ?", (ticket,)).fetchone()
        if row is not None:
            db.execute("DELETE FROM jobs WHERE uuid = ?", (ticket,))
            self._counts[JobState(row[0])] -= 1

    def expire(self, before: float) -> float | None:
        db = self._write()
        gone = "FROM jobs WHERE finished IS NOT NULL AND finished < ?"
        for state, count in db.execute(f"SELECT state, count(*) {gone} GROUP BY state", (before,)):
            self._counts[JobState(state)] -= count
        db.execute(f"DELETE {gone}", (before,))
        oldest = db.execute("SELECT min(finished) FROM jobs WHERE finished IS NOT NULL")
        value = oldest.fetchone()[0]
        return None if value is None else float(value)

    def _move(self, old: JobState, new: JobState, count: int = 1) -> None:
        if count > 0:
            self._counts[old] -= count
            self._counts[new] += count

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------------

    def outcome(self, ticket: str) -> Outcome | None:
        row = self.db.execute(
            "SELECT state, attempts, retries, eta, result, error FROM jobs WHERE uuid = ?",
            (ticket,),
        ).fetchone()
        if row is None:
            return None
        state = JobState(row[0])
        result = unpack_frames(row[4]) if row[4] is not None and state in FINISHED else None
        return Outcome(state, row[1], row[2], row[3], result, row[5])

    def counts(self) -> dict[JobState, int]:
        return dict(self._counts)

    def count_rows(self) -> dict[JobState, int]:
        """:meth:`counts` from the rows themselves (a ``count(*)``: at start-up, and in tests)."""
        counts = dict.fromkeys(JobState, 0)
        for state, count in self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = count
        return counts

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.db.close()
