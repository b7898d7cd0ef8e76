"""Process facts from /proc: command name and systemd unit (from the cgroup).

DRM fdinfo parsing lives in `hydra_fleet.gpu.fdinfo` (shared with the launcher).
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra_fleet.gpu.fdinfo import DrmClient, drm_clients, parse_size, pids

__all__ = [
    "DrmClient",
    "comm",
    "drm_clients",
    "parse_size",
    "pids",
    "unit",
    "unit_from_cgroup_text",
]

_UNIT = re.compile(r"[^/]+\.(?:service|scope)$")


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
