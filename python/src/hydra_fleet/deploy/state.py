"""The host's deploy state under `state_dir` (default /var/lib/hydra-deploy).

- `lock`: flock'd by the one process working on the host's system (a deploy, its dead-man
  rescue, a rollback). A second one is refused, naming the holder from `current.json`.
- `current.json`: the deploy in progress: who, the recorded system and profile generation,
  the new system, the phase. It outlives a killed deploy process, so the dead-man timer (or the
  next deploy, after a reboot) knows what to restore. Removed when the deploy is resolved.
- `results/<id>.json`: each deploy's outcome, exit code and one-line summary; what the
  operator's side reads (world-readable: it holds no secrets).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

FINAL = ("committed", "rolled-back", "rollback-failed", "refused")


@dataclasses.dataclass
class Record:
    """One deploy on the host, as kept in `current.json` and `results/<id>.json`."""

    id: str
    holder: str
    kind: str = "switch"  # switch | rollback
    old: str = ""
    new: str = ""
    profile_generation: int | None = None
    profile_target: str = ""
    phase: str = "started"
    started_at: float = dataclasses.field(default_factory=time.time)
    deadman_at: float | None = None
    exit_code: int | None = None
    summary: str = ""
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "holder": self.holder,
            "kind": self.kind,
            "old": self.old,
            "new": self.new,
            "profileGeneration": self.profile_generation,
            "profileTarget": self.profile_target,
            "phase": self.phase,
            "startedAt": self.started_at,
            "deadmanAt": self.deadman_at,
            "exitCode": self.exit_code,
            "summary": self.summary,
            "failed": self.failed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(
            id=str(data["id"]),
            holder=str(data.get("holder", "?")),
            kind=str(data.get("kind", "switch")),
            old=str(data.get("old", "")),
            new=str(data.get("new", "")),
            profile_generation=data.get("profileGeneration"),
            profile_target=str(data.get("profileTarget", "")),
            phase=str(data.get("phase", "started")),
            started_at=float(data.get("startedAt", 0.0)),
            deadman_at=data.get("deadmanAt"),
            exit_code=data.get("exitCode"),
            summary=str(data.get("summary", "")),
            failed={str(k): str(v) for k, v in (data.get("failed") or {}).items()},
        )

    def describe_holder(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self.started_at))
        return f"deploy {self.id} by {self.holder} (since {since}, {self.phase})"


class State:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None

    @property
    def current_file(self) -> Path:
        return self.root / "current.json"

    def result_file(self, deploy_id: str) -> Path:
        return self.root / "results" / f"{deploy_id}.json"

    def _prepare(self) -> None:
        (self.root / "results").mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.root / "results"):
            with contextlib.suppress(OSError):
                folder.chmod(0o755)

    def try_lock(self) -> bool:
        """Take the host's deploy lock without waiting; False when another process holds it."""
        self._prepare()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def lock(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.try_lock():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def current(self) -> Record | None:
        try:
            return Record.from_json(json.loads(self.current_file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, record: Record) -> None:
        _write_json(self.current_file, record.to_json())

    def finish(self, record: Record) -> None:
        """Write the outcome where the operator reads it, then drop the in-progress record."""
        _write_json(self.result_file(record.id), record.to_json())
        current = self.current()
        if current is not None and current.id == record.id:
            self.current_file.unlink(missing_ok=True)

    def write_result(self, record: Record) -> None:
        _write_json(self.result_file(record.id), record.to_json())

    def result(self, deploy_id: str) -> Record | None:
        try:
            data = json.loads(self.result_file(deploy_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return Record.from_json(data)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically, and on disk before we go on (a power loss must not leave half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.chmod(0o644)
    tmp.replace(path)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
