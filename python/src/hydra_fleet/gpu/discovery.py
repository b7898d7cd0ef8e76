"""Which AMD GPUs a host has, numbered the way ROCm numbers them: in PCI bus order.

The DRM card number (`card0`, `card1`, ...) follows driver probe order, which differs from
PCI order on many boards (a card on bus 0c can be probed before one on bus 03). ROCm
(`HIP_VISIBLE_DEVICES`, `ROCR_VISIBLE_DEVICES`) and `hydra.gpus` indices count in PCI order,
so the exporter's `index` label and the launcher's pinning both come from `amd_cards`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

AMD_VENDOR_ID = "0x1002"
_CARD = re.compile(r"card(\d+)")
_BUS_ID = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


@dataclass(frozen=True)
class PciGpu:
    """One DRM card: its position among this vendor's cards in PCI order, and its paths."""

    index: int
    bus_id: str  # `0000:03:00.0`
    card: Path  # <sysfs>/class/drm/cardN
    vendor_id: str  # `0x1002`
    device_id: str  # `0x66a1`

    @property
    def device(self) -> Path:
        """The PCI device directory (`cardN/device`), where amdgpu's files are."""
        return self.card / "device"


def bus_sort_key(bus_id: str) -> tuple[int, ...]:
    """`0000:0c:00.0` -> (0, 12, 0, 0): numeric, so domain 10000 sorts after ffff."""
    parts = re.split(r"[:.]", bus_id)
    try:
        return tuple(int(part, 16) for part in parts)
    except ValueError:
        return (1 << 32,)


def drm_cards(sysfs_root: Path, vendor_id: str | None = AMD_VENDOR_ID) -> list[PciGpu]:
    """The DRM cards of `vendor_id` (every vendor when None), indexed in PCI bus order."""
    drm = sysfs_root / "class" / "drm"
    try:
        names = os.listdir(drm)
    except OSError:
        return []
    found: list[tuple[str, Path, str, str]] = []
    for name in names:
        if not _CARD.fullmatch(name):
            continue  # connectors (card0-DP-1) and render nodes
        card = drm / name
        vendor = read_text(card / "device" / "vendor")
        if vendor is None or (vendor_id is not None and vendor != vendor_id):
            continue
        bus = os.path.basename(os.path.realpath(card / "device"))
        if not _BUS_ID.fullmatch(bus):
            bus = ""  # not a PCI device (a platform GPU): sorts last, by card name
        found.append((bus, card, vendor, read_text(card / "device" / "device") or ""))
    found.sort(key=lambda f: (bus_sort_key(f[0]) if f[0] else (1 << 33,), _card_number(f[1])))
    return [
        PciGpu(index, bus, card, vendor, device)
        for index, (bus, card, vendor, device) in enumerate(found)
    ]


def amd_cards(sysfs_root: Path) -> list[PciGpu]:
    """The amdgpu cards, indexed in PCI bus order (the order ROCm counts them in)."""
    return drm_cards(sysfs_root, AMD_VENDOR_ID)


def _card_number(card: Path) -> int:
    match = _CARD.fullmatch(card.name)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class KfdNode:
    """A GPU node of the KFD topology (ROCm's view of the card)."""

    node: int
    gpu_id: int  # names the per-process files: <sysfs>/class/kfd/kfd/proc/<pid>/vram_<gpu_id>
    bus_id: str
    gfx_target: str  # `gfx906`


def kfd_nodes(sysfs_root: Path) -> dict[str, KfdNode]:
    """PCI bus id -> the KFD node of that GPU (CPU nodes left out)."""
    nodes_dir = sysfs_root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    try:
        entries = os.listdir(nodes_dir)
    except OSError:
        return {}
    found: dict[str, KfdNode] = {}
    for entry in sorted(entries):
        if not entry.isdigit():
            continue
        node = nodes_dir / entry
        props: dict[str, int] = {}
        for line in (read_text(node / "properties") or "").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                props[key] = int(value)
        version = props.get("gfx_target_version", 0)
        if not version:
            continue  # a CPU node
        loc = props.get("location_id", 0)
        bus = f"{props.get('domain', 0):04x}:{loc >> 8:02x}:{(loc >> 3) & 0x1F:02x}.{loc & 0x7:x}"
        major, minor, step = version // 10000, (version // 100) % 100, version % 100
        gpu_id_text = read_text(node / "gpu_id") or ""
        gpu_id = int(gpu_id_text) if gpu_id_text.isdigit() else 0
        found[bus] = KfdNode(int(entry), gpu_id, bus, f"gfx{major}{minor}{step:x}")
    return found


def kfd_process_vram(sysfs_root: Path, pids: set[int] | None = None) -> dict[tuple[int, int], int]:
    """(pid, KFD gpu_id) -> VRAM bytes, from <sysfs>/class/kfd/kfd/proc/<pid>/vram_<gpu_id>.

    The kernel makes these files world-readable, so no ptrace capability is needed (unlike
    other processes' /proc/<pid>/fdinfo). Only ROCm (KFD) processes appear here.
    """
    proc_dir = sysfs_root / "class" / "kfd" / "kfd" / "proc"
    try:
        entries = os.listdir(proc_dir)
    except OSError:
        return {}
    held: dict[tuple[int, int], int] = {}
    for entry in entries:
        if not entry.isdigit() or (pids is not None and int(entry) not in pids):
            continue
        try:
            files = os.listdir(proc_dir / entry)
        except OSError:
            continue  # the process exited meanwhile
        for name in files:
            if not name.startswith("vram_") or not name[5:].isdigit():
                continue
            text = read_text(proc_dir / entry / name)
            if text is not None and text.isdigit():
                held[(int(entry), int(name[5:]))] = int(text)
    return held
