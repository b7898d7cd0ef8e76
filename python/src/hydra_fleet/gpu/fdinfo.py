"""DRM clients from /proc/<pid>/fdinfo: VRAM per open DRM file, each file counted once.

The kernel's DRM usage stats (Documentation/gpu/drm-usage-stats.rst) write sizes with a unit
(`B`, `KiB`, `MiB`, `GiB`; none means bytes) and identify a client (an open DRM file) by
`drm-client-id`. The same file shows up in every fd and every process that shares it (dup,
fork, SCM_RIGHTS), so a client is counted once, for the lowest pid that holds it.

Another process's fdinfo is readable only to its owner (or with CAP_SYS_PTRACE): unreadable
ones are skipped, so without privilege this sees the caller's own processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SIZE_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def parse_size(value: str) -> int | None:
    """`1234 KiB` -> 1263616; `4096` -> 4096; None when it is not a size."""
    number, _, suffix = value.strip().partition(" ")
    factor = SIZE_UNITS.get(suffix.strip())
    if factor is None or not number.isdigit():
        return None
    return int(number) * factor


@dataclass(frozen=True)
class DrmClient:
    pid: int
    pdev: str
    client_id: str
    vram_bytes: int


def pids(proc_root: Path) -> Iterator[int]:
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            yield int(entry)


def drm_clients(
    proc_root: Path, driver: str = "amdgpu", only: Iterable[int] | None = None
) -> list[DrmClient]:
    """Every DRM client of `driver` (of the processes `only`, when given), counted once."""
    seen: dict[tuple[str, str], DrmClient] = {}
    for pid in sorted(pids(proc_root) if only is None else set(only)):
        fdinfo = proc_root / str(pid) / "fdinfo"
        try:
            fds = os.listdir(fdinfo)
        except OSError:
            continue
        for fd in fds:
            try:
                text = (fdinfo / fd).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if "drm-client-id" not in text:
                continue
            fields: dict[str, str] = {}
            for line in text.splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    fields[key.strip()] = value.strip()
            if fields.get("drm-driver") != driver:
                continue
            client = (fields.get("drm-pdev", ""), fields.get("drm-client-id", ""))
            if client in seen:
                continue
            # drm-memory-<region> is the older name of drm-resident-<region> (kernel 6.6+ has both).
            raw = fields.get("drm-resident-vram") or fields.get("drm-memory-vram", "")
            seen[client] = DrmClient(pid, client[0], client[1], parse_size(raw) or 0)
    return list(seen.values())
