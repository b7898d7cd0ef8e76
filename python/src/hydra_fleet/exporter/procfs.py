"""Process facts from /proc: command name, systemd unit (from the cgroup), DRM fdinfo VRAM."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_UNIT = re.compile(r"[^/]+\.(?:service|scope)$")
_SIZE_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def comm(proc_root: Path, pid: int) -> str:
    try:
        return (proc_root / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def unit_from_cgroup_text(text: str) -> str:
    """The innermost systemd unit in a /proc/<pid>/cgroup file, or "".

    `0::/system.slice/ollama.service` -> `ollama.service`;
    `0::/user.slice/user-1000.slice/user@1000.service/app.slice/comfyui.service` ->
    `comfyui.service`; a process in a session scope gives its `session-N.scope`.
    """
    for line in text.splitlines():
        # cgroup v2 is the "0::" line; on a hybrid v1 host the name=systemd line has the path.
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" or controllers == "name=systemd":
            for part in reversed(path.strip().split("/")):
                if _UNIT.fullmatch(part):
                    return part
    return ""


def unit(proc_root: Path, pid: int) -> str:
    try:
        text = (proc_root / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return unit_from_cgroup_text(text)


def pids(proc_root: Path) -> Iterator[int]:
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            yield int(entry)


def parse_size(value: str) -> int | None:
    """`1234 KiB` -> 1263616."""
    number, _, suffix = value.strip().partition(" ")
    factor = _SIZE_UNITS.get(suffix.strip())
    if factor is None or not number.isdigit():
        return None
    return int(number) * factor


@dataclass(frozen=True)
class DrmClient:
    pid: int
    pdev: str
    client_id: str
    vram_bytes: int


def drm_clients(proc_root: Path, driver: str = "amdgpu") -> list[DrmClient]:
    """Every DRM client of `driver`, from /proc/<pid>/fdinfo/*, counted once.

    A client (an open DRM file) shows up in every fd and every process that shares it
    (dup, fork); the kernel's `drm-client-id` identifies it, so each is kept once, with the
    first (lowest) pid that holds it.
    """
    seen: dict[tuple[str, str], DrmClient] = {}
    for pid in sorted(pids(proc_root)):
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
            raw = fields.get("drm-memory-vram") or fields.get("drm-resident-vram", "")
            vram = parse_size(raw) or 0
            seen[client] = DrmClient(pid, client[0], client[1], vram)
    return list(seen.values())
