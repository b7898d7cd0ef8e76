"""SQLite state: the remediation budget and the alert outbox.

WAL with `synchronous=FULL`: a committed row survives SIGKILL and power loss. Every call
runs on one dedicated thread (`AsyncStore`), so the event loop never waits on the disk.

Retry times are wall-clock times, so they are bounded against clock jumps: a caller passes
`hold_max` (the retry maximum) and a row whose `next_try` lies further ahead than that is
due now (the clock went back, or a send failed while it was far ahead). A database that
SQLite finds corrupt is moved aside (`health.sqlite3.corrupt-<time>`) and a fresh one is
started (`Store.reset_from` says so, and the agent raises an alert). A full disk at start
is a `StateTemporaryError` (exit 75: systemd retries); a database that cannot be opened
for any other reason is a `StateError` (78).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from hydra_fleet.core.errors import EX_CONFIG, EX_TEMPFAIL, HydraError

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS remediation (
  id INTEGER PRIMARY KEY,
  service TEXT NOT NULL,
  ts REAL NOT NULL,
  action TEXT NOT NULL,
  result TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS remediation_service_ts ON remediation(service, ts);
CREATE TABLE IF NOT EXISTS service_state (
  service TEXT PRIMARY KEY,
  next_allowed REAL NOT NULL DEFAULT 0,
  escalated_at REAL
);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY,
  dedup_key TEXT NOT NULL UNIQUE,
  fingerprint TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
  labels TEXT NOT NULL,
  annotations TEXT NOT NULL,
  starts_at REAL NOT NULL,
  ends_at REAL,
  created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_fingerprint ON alerts(fingerprint, id);
CREATE TABLE IF NOT EXISTS deliveries (
  alert_id INTEGER NOT NULL REFERENCES alerts(id),
  sink TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_try REAL NOT NULL DEFAULT 0,
  delivered_at REAL,
  last_error TEXT,
  PRIMARY KEY (alert_id, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(sink, delivered_at, next_try);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class Alert:
    id: int
    dedup_key: str
    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Alert:
        return cls(
            id=row["id"],
            dedup_key=row["dedup_key"],
            fingerprint=row["fingerprint"],
            status=row["status"],
            labels=json.loads(row["labels"]),
            annotations=json.loads(row["annotations"]),
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            created_at=row["created_at"],
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Store:
    """Synchronous access; use it from one thread (`AsyncStore` does that)."""

    def __init__(self, path: Path, *, check: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.reset_from: Path | None = None
        self._lock = threading.Lock()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._setup(check=check)
        except BaseException:
            self.db.close()
            raise

    def _setup(self, *, check: bool) -> None:
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("PRAGMA foreign_keys=ON")
        if check:
            row = self.db.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction. On any failure (a full disk fails the write or
        the COMMIT) everything is rolled back and the error raised: nothing half-done stays."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self.db)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise
            return result

    # remediation ------------------------------------------------------------------------

    def record_remediation(
        self,
        service: str,
        *,
        ts: float,
        action: str,
        result: str,
        detail: str,
        next_allowed: float,
    ) -> int:
        """Charge one attempt to the service's budget and set its backoff; the row's id.

        The agent calls this *before* it acts (result "started") and acts only once the
        charge is committed, then fills in the result with `finish_remediation`."""

        def run(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO remediation(service, ts, action, result, detail) VALUES (?,?,?,?,?)",
                (service, ts, action, result, detail),
            )
            db.execute(
                "INSERT INTO service_state(service, next_allowed) VALUES (?, ?) "
                "ON CONFLICT(service) DO UPDATE SET next_allowed = excluded.next_allowed",
                (service, next_allowed),
            )
            return int(cur.lastrowid or 0)

        return self._tx(run)

    def finish_remediation(self, row_id: int, *, result: str, detail: str) -> None:
        self._tx(
            lambda db: db.execute(
                "UPDATE remediation SET result = ?, detail = ? WHERE id = ?",
                (result, detail, row_id),
            )
        )

    def attempts_since(self, service: str, since: float) -> list[float]:
        rows = self.db.execute(
            "SELECT ts FROM remediation WHERE service = ? AND ts > ? ORDER BY ts",
            (service, since),
        ).fetchall()
        return [row["ts"] for row in rows]

    def service_state(self, service: str) -> tuple[float, float | None]:
        row = self.db.execute(
            "SELECT next_allowed, escalated_at FROM service_state WHERE service = ?", (service,)
        ).fetchone()
        return (0.0, None) if row is None else (row["next_allowed"], row["escalated_at"])

    def set_escalated(self, service: str, at: float | None) -> None:
        self._tx(
            lambda db: db.execute(
                "INSERT INTO service_state(service, escalated_at) VALUES (?, ?) "
                "ON CONFLICT(service) DO UPDATE SET escalated_at = excluded.escalated_at",
                (service, at),
            )
        )

    def reset_service(self, service: str) -> None:
        """Sustained health: forget the backoff and the escalation (not the hour's attempts)."""
        self._tx(
            lambda db: db.execute(
                "UPDATE service_state SET next_allowed = 0, escalated_at = NULL WHERE service = ?",
                (service,),
            )
        )

    # alert outbox -----------------------------------------------------------------------

    def enqueue(
        self,
        *,
        dedup_key: str,
        fingerprint: str,
        status: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        starts_at: float,
        ends_at: float | None,
        now: float,
        sinks: list[str],
        hold_max: float | None = None,
    ) -> int | None:
        """Insert the alert and one pending delivery per sink, atomically; None if a duplicate.

        A new alert joins the back of a sink's held queue, but is never held longer than
        `hold_max` seconds from `now`."""
        limit = now + hold_max if hold_max is not None else float("inf")

        def run(db: sqlite3.Connection) -> int | None:
            cur = db.execute(
                "INSERT OR IGNORE INTO alerts(dedup_key, fingerprint, status, labels, "
                "annotations, starts_at, ends_at, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    dedup_key,
                    fingerprint,
                    status,
                    json.dumps(labels, sort_keys=True),
                    json.dumps(annotations, sort_keys=True),
                    starts_at,
                    ends_at,
                    now,
                ),
            )
            if cur.rowcount == 0:
                return None
            alert_id = cur.lastrowid
            # a new alert joins the back of a held queue, keeping the sink's order
            db.executemany(
                "INSERT INTO deliveries(alert_id, sink, next_try) VALUES (?, ?, MIN(?, COALESCE("
                "(SELECT MAX(next_try) FROM deliveries WHERE sink = ? AND delivered_at IS NULL),"
                " 0)))",
                [(alert_id, sink, limit, sink) for sink in sinks],
            )
            return alert_id

        return self._tx(run)

    def pending(
        self, sink: str, now: float, limit: int = 100, *, hold_max: float | None = None
    ) -> list[tuple[Alert, int]]:
        """Undelivered alerts due for `sink`, oldest first: `next_try` has come, or lies
        more than `hold_max` ahead (a wall-clock jump) and so is due as well."""
        beyond = now + hold_max if hold_max is not None else float("inf")
        rows = self.db.execute(
            "SELECT a.*, d.attempts FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.sink = ? AND d.delivered_at IS NULL AND (d.next_try <= ? OR d.next_try > ?) "
            "ORDER BY a.id LIMIT ?",
            (sink, now, beyond, limit),
        ).fetchall()
        return [(Alert.from_row(row), row["attempts"]) for row in rows]

    def next_due(self, sink: str, now: float = 0.0, hold_max: float | None = None) -> float | None:
        """When the next undelivered row of `sink` is due (a row held beyond `hold_max`
        counts as due at `now`); None when nothing is undelivered."""
        beyond = now + hold_max if hold_max is not None else float("inf")
        row = self.db.execute(
            "SELECT MIN(CASE WHEN next_try > ? THEN ? ELSE next_try END) AS t "
            "FROM deliveries WHERE sink = ? AND delivered_at IS NULL",
            (beyond, now, sink),
        ).fetchone()
        return None if row["t"] is None else float(row["t"])

    def mark_delivered(self, alert_id: int, sink: str, now: float) -> None:
        self._tx(
            lambda db: db.execute(
                "UPDATE deliveries SET delivered_at = ?, attempts = attempts + 1, "
                "last_error = NULL WHERE alert_id = ? AND sink = ?",
                (now, alert_id, sink),
            )
        )

    def mark_failed(self, alert_id: int, sink: str, next_try: float, error: str) -> None:
        """Count the failure on this row, and hold the sink's whole queue until `next_try`
        (so a sink that comes back receives its alerts in the order they were raised).

        Every undelivered row gets this `next_try`, not the larger of it and its own: a
        time set while the clock was far ahead does not survive the next failure."""

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ? "
                "WHERE alert_id = ? AND sink = ?",
                (error[:500], alert_id, sink),
            )
            db.execute(
                "UPDATE deliveries SET next_try = ? WHERE sink = ? AND delivered_at IS NULL",
                (next_try, sink),
            )

        self._tx(run)

    def touch(self, now: float) -> None:
        """A tiny write: whether the store accepts writes again."""
        self._tx(
            lambda db: db.execute(
                "INSERT INTO meta(key, value) VALUES ('writable_at', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(now),),
            )
        )

    def retry_now(self) -> int:
        return self._tx(
            lambda db: (
                db.execute("UPDATE deliveries SET next_try = 0 WHERE delivered_at IS NULL").rowcount
            )
        )

    def firing(self) -> list[Alert]:
        """The newest alert per fingerprint, where that one is firing."""
        rows = self.db.execute(
            "SELECT a.* FROM alerts a JOIN (SELECT fingerprint, MAX(id) AS id FROM alerts "
            "GROUP BY fingerprint) last ON last.id = a.id WHERE a.status = 'firing' ORDER BY a.id"
        ).fetchall()
        return [Alert.from_row(row) for row in rows]

    def last_alert(self, fingerprint: str) -> Alert | None:
        row = self.db.execute(
            "SELECT * FROM alerts WHERE fingerprint = ? ORDER BY id DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        return None if row is None else Alert.from_row(row)

    def listing(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT a.*, d.sink, d.attempts, d.delivered_at, d.next_try, d.last_error "
            "FROM alerts a JOIN deliveries d ON d.alert_id = a.id ORDER BY a.id DESC, d.sink "
            "LIMIT ?",
            (limit,),
        ).fetchall()
        result = []
        for row in rows:
            item = Alert.from_row(row).to_json()
            item.update(
                sink=row["sink"],
                attempts=row["attempts"],
                delivered_at=row["delivered_at"],
                next_try=row["next_try"],
                last_error=row["last_error"],
            )
            result.append(item)
        return result

    def outbox_stats(self, now: float) -> dict[str, tuple[int, float]]:
        """Per sink: (undelivered count, age of the oldest undelivered alert in seconds)."""
        rows = self.db.execute(
            "SELECT d.sink, COUNT(*) AS n, MIN(a.created_at) AS oldest FROM deliveries d "
            "JOIN alerts a ON a.id = d.alert_id WHERE d.delivered_at IS NULL GROUP BY d.sink"
        ).fetchall()
        return {row["sink"]: (row["n"], max(0.0, now - row["oldest"])) for row in rows}


class StateError(HydraError):
    """The state database cannot be opened: the agent cannot keep its promises without it."""

    exit_code = EX_CONFIG


class StateTemporaryError(StateError):
    """The state database cannot be opened for now (a full disk, an I/O error): exit 75."""

    exit_code = EX_TEMPFAIL


SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26


def sqlite_code(err: BaseException) -> int | None:
    """The primary SQLite result code of an error (13 for a full disk), or None."""
    code = getattr(err, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_write_failure(err: BaseException) -> bool:
    """Whether `err` is the store failing to write (full disk, I/O, read-only), which the
    agent rides out in memory, as opposed to a bug."""
    return isinstance(err, sqlite3.Error | OSError)


def _temporary(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)
    return sqlite_code(err) in (SQLITE_FULL, SQLITE_IOERR)


def _corrupt(err: BaseException) -> bool:
    return isinstance(err, sqlite3.DatabaseError) and (
        sqlite_code(err) in (SQLITE_CORRUPT, SQLITE_NOTADB) or "quick_check" in str(err)
    )


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target


def open_store(path: Path, *, repair: bool = True) -> Store:
    """`Store(path)`, with a one-line error naming the file when that is impossible.

    With `repair` (the agent), a corrupt database is moved aside and a fresh one opened
    (`reset_from` names the old one); without (the inspecting commands) it is an error."""
    try:
        try:
            return Store(path)
        except sqlite3.DatabaseError as err:
            if not (repair and _corrupt(err)):
                raise
            moved = _move_aside(path)
            store = Store(path)
            store.reset_from = moved
            return store
    except (OSError, sqlite3.Error) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        message = f"cannot open the state database {path}: {reason} (check stateDir / --state-dir)"
        if _temporary(err):
            raise StateTemporaryError(message) from err
        raise StateError(message) from err


class AsyncStore:
    """`Store` behind one worker thread: `await store.call(Store.method, args...)`."""

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydra-store")
        try:
            self.sync = self._executor.submit(open_store, path).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self.sync, *args, **kwargs))

    def close(self) -> None:
        self._executor.submit(self.sync.close).result()
        self._executor.shutdown(wait=True)
