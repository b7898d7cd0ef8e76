"""The SQLite outbox survives SIGKILL in the middle of writing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hydra_fleet.health.store import Store

WRITER = """
import sys, time
from pathlib import Path
from hydra_fleet.health.store import Store
store = Store(Path(sys.argv[1]))
i = 0
while True:
    store.enqueue(dedup_key=f"k{i}", fingerprint=f"f{i % 7}", status="firing",
                  labels={"alertname": "A", "n": str(i)}, annotations={"x": "y" * 200},
                  starts_at=time.time(), ends_at=None, now=time.time(),
                  sinks=["webhook", "ntfy"])
    print(i, flush=True)   # only after the commit returned
    i += 1
"""


def test_outbox_killed_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    db = tmp_path / "health.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    committed = -1
    deadline = time.monotonic() + 30
    while committed < 200 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed = int(line)
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.wait()
    for line in rest.split():
        committed = max(committed, int(line))
    assert committed >= 200, "the writer did not get going"

    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    raw.close()
    store = Store(db)
    keys = {row[0] for row in store.db.execute("SELECT dedup_key FROM alerts")}
    assert {f"k{i}" for i in range(committed + 1)} <= keys
    # every alert has exactly its two deliveries: no half-written transaction
    counts = store.db.execute(
        "SELECT COUNT(*) FROM alerts a WHERE (SELECT COUNT(*) FROM deliveries d "
        "WHERE d.alert_id = a.id) != 2"
    ).fetchone()
    assert tuple(counts) == (0,)
    assert len(store.pending("webhook", time.time() + 1, limit=10_000)) == len(keys)
    store.close()


def test_enqueue_deduplicates_and_tracks_each_sink(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    args = {
        "dedup_key": "k",
        "fingerprint": "f",
        "status": "firing",
        "labels": {"alertname": "A"},
        "annotations": {},
        "starts_at": 1.0,
        "ends_at": None,
        "now": 1.0,
        "sinks": ["a", "b"],
    }
    first = store.enqueue(**args)  # type: ignore[arg-type]
    assert first is not None
    assert store.enqueue(**args) is None  # type: ignore[arg-type]
    store.mark_delivered(first, "a", 2.0)
    store.mark_failed(first, "b", 100.0, "HTTP 503")
    assert store.pending("a", 1000.0) == []
    assert store.pending("b", 50.0) == []
    assert [a.id for a, _ in store.pending("b", 100.0)] == [first]
    assert store.retry_now() == 1
    assert store.outbox_stats(11.0) == {"b": (1, 10.0)}
    store.close()
