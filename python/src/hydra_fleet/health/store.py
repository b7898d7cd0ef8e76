"""SQLite state: the remediation budget and the alert outbox.

WAL with `synchronous=FULL`: a committed row survives SIGKILL and power loss. Every call
runs on one dedicated thread (`AsyncStore`), so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from hydra_fleet.core.errors import EX_CONFIG, HydraError

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

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self.db)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
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
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO remediation(service, ts, action, result, detail) VALUES (?,?,?,?,?)",
                (service, ts, action, result, detail),
            )
            db.execute(
                "INSERT INTO service_state(service, next_allowed) VALUES (?, ?) "
                "ON CONFLICT(service) DO UPDATE SET next_allowed = excluded.next_allowed",
                (service, next_allowed),
            )

        self._tx(run)

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
    ) -> int | None:
        """Insert the alert and one pending delivery per sink, atomically; None if a duplicate."""

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
                "INSERT INTO deliveries(alert_id, sink, next_try) VALUES (?, ?, COALESCE("
                "(SELECT MAX(next_try) FROM deliveries WHERE sink = ? AND delivered_at IS NULL),"
                " 0))",
                [(alert_id, sink, sink) for sink in sinks],
            )
            return alert_id

        return self._tx(run)

    def pending(self, sink: str, now: float, limit: int = 100) -> list[tuple[Alert, int]]:
        rows = self.db.execute(
            "SELECT a.*, d.attempts FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.sink = ? AND d.delivered_at IS NULL AND d.next_try <= ? "
            "ORDER BY a.id LIMIT ?",
            (sink, now, limit),
        ).fetchall()
        return [(Alert.from_row(row), row["attempts"]) for row in rows]

    def next_due(self, sink: str) -> float | None:
        row = self.db.execute(
            "SELECT MIN(next_try) AS t FROM deliveries WHERE sink = ? AND delivered_at IS NULL",
            (sink,),
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
        (so a sink that comes back receives its alerts in the order they were raised)."""

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ? "
                "WHERE alert_id = ? AND sink = ?",
                (error[:500], alert_id, sink),
            )
            db.execute(
                "UPDATE deliveries SET next_try = MAX(next_try, ?) "
                "WHERE sink = ? AND delivered_at IS NULL",
                (next_try, sink),
            )

        self._tx(run)

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


def open_store(path: Path) -> Store:
    """`Store(path)`, with a one-line error naming the file when that is impossible."""
    try:
        return Store(path)
    except (OSError, sqlite3.Error) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise StateError(
            f"cannot open the state database {path}: {reason} (check stateDir / --state-dir)"
        ) from err


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
