"""Process facts from /proc: systemd unit from the cgroup, DRM clients from fdinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydra_fleet.exporter import procfs
from tests.exporter.kernel_trees import Proc, drm_fdinfo, make_proc


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        ("0::/system.slice/ollama.service", "ollama.service"),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/comfyui.service",
            "comfyui.service",
        ),
        ("0::/system.slice/hydra-inference-mi50.service/engine", "hydra-inference-mi50.service"),
        ("0::/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
        (
            "12:memory:/system.slice/x.service\n1:name=systemd:/system.slice/llama.service\n0::/",
            "llama.service",
        ),
        ("0::/", ""),
        ("0::/init.scope", "init.scope"),
    ],
)
def test_unit_from_cgroup(cgroup: str, unit: str) -> None:
    """The innermost systemd unit is the one an operator restarts."""
    assert procfs.unit_from_cgroup_text(cgroup) == unit


def test_parse_size() -> None:
    """fdinfo sizes carry binary suffixes."""
    assert procfs.parse_size("1234 KiB") == 1234 * 1024
    assert procfs.parse_size("3 MiB") == 3 * 1024**2
    assert procfs.parse_size("77") == 77
    assert procfs.parse_size("junk") is None


def test_drm_clients_counted_once(tmp_path: Path) -> None:
    """A DRM file shared by fds and by a forked child is one client, kept under the parent."""
    shared = drm_fdinfo("0000:03:00.0", 7, 1024)
    root = make_proc(
        tmp_path,
        [
            Proc(100, "ollama", "0::/system.slice/ollama.service", {5: shared, 6: shared}),
            Proc(101, "ollama-runner", "0::/system.slice/ollama.service", {5: shared}),
            Proc(
                200,
                "llama-server",
                "0::/system.slice/x.service",
                {9: drm_fdinfo("0000:03:00.0", 8, 2048)},
            ),
            Proc(300, "Xorg", "0::/", {4: drm_fdinfo("0000:03:00.0", 9, 64, driver="i915")}),
        ],
    )
    clients = sorted(procfs.drm_clients(root), key=lambda c: c.client_id)
    assert [(c.pid, c.client_id, c.vram_bytes) for c in clients] == [
        (100, "7", 1024 * 1024),
        (200, "8", 2048 * 1024),
    ]


def test_vanished_process_is_skipped(tmp_path: Path) -> None:
    """A pid that exits between listdir and read does not break the walk."""
    root = make_proc(tmp_path, [Proc(100, "a", "0::/", {5: drm_fdinfo("0000:03:00.0", 1, 1)})])
    (root / "999").mkdir()  # no comm, no fdinfo: as if it just exited
    assert [c.pid for c in procfs.drm_clients(root)] == [100]
    assert procfs.comm(root, 999) == ""
    assert procfs.unit(root, 999) == ""
