"""sysfs and procfs trees laid out as the kernel lays them out, for the amdgpu backend."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@dataclass
class Card:
    """One PCI display device as amdgpu (or another driver) exposes it."""

    card: int
    bus_id: str
    vendor: str = "0x1002"
    device: str = "0x66a1"
    files: dict[str, str] = field(default_factory=dict)
    hwmon: dict[str, str] = field(default_factory=dict)
    connectors: tuple[str, ...] = ()
    gfx: int = 0  # KFD gfx_target_version, e.g. 90006 for gfx906
    gpu_id: int = 0  # KFD topology gpu_id (names kfd/proc/<pid>/vram_<gpu_id>)


MI50_FILES = {
    "unique_id": "0b7d2c8172fe7213",
    "product_name": "Radeon Instinct MI50 32GB",
    "gpu_busy_percent": "37",
    "mem_info_vram_total": str(32 * 1024**3),
    "mem_info_vram_used": str(12 * 1024**3),
    "mem_info_gtt_total": str(16 * 1024**3),
    "mem_info_gtt_used": str(20 * 1024**2),
    "pp_dpm_sclk": "0: 925Mhz\n1: 1000Mhz\n2: 1725Mhz *\n",
    "pp_dpm_mclk": "0: 350Mhz\n1: 800Mhz *\n",
    "current_link_speed": "16.0 GT/s PCIe",
    "current_link_width": "16",
    "max_link_speed": "16.0 GT/s PCIe",
    "max_link_width": "16",
    "mem_busy_percent": "21",
    "pcie_replay_count": "0",
    "subsystem_vendor": "0x1002",
    "subsystem_device": "0x0834",
    "power/runtime_status": "active",
    "ras/umc_err_count": "ue: 1\nce: 4\n",
    "ras/gfx_err_count": "ue: 0\nce: 2\n",
}
# MI50 is passively cooled: no fan files. power1_average in microwatts.
MI50_HWMON = {
    "name": "amdgpu",
    "power1_average": "187000000",
    "power1_cap": "225000000",
    "power1_cap_min": "0",
    "power1_cap_max": "300000000",
    "power1_cap_default": "225000000",
    "temp1_input": "52000",
    "temp1_label": "edge",
    "temp2_input": "61000",
    "temp2_label": "junction",
    "temp3_input": "58000",
    "temp3_label": "mem",
}
# No product_name on RDNA3 workstation boards: the name comes from pci.ids.
W7500_FILES = {
    "gpu_busy_percent": "3",
    "mem_busy_percent": "1",
    "mem_info_vram_total": str(8 * 1024**3),
    "mem_info_vram_used": str(512 * 1024**2),
    "pp_dpm_sclk": "0: 500Mhz *\n1: 2000Mhz\n",
    "pp_dpm_mclk": "0: 96Mhz\n1: 456Mhz\n2: 772Mhz\n3: 1124Mhz *\n",
    "current_link_speed": "16.0 GT/s PCIe",
    "current_link_width": "8",
    "max_link_speed": "16.0 GT/s PCIe",
    "max_link_width": "8",
    "pcie_replay_count": "2",
    "subsystem_vendor": "0x1002",
    "subsystem_device": "0x0e0d",
    "power/runtime_status": "active",
}
# RDNA3 reports power1_input (no _average) and has a fan.
W7500_HWMON = {
    "name": "amdgpu",
    "power1_input": "25000000",
    "power1_cap": "70000000",
    "power1_cap_min": "50000000",
    "power1_cap_max": "70000000",
    "power1_cap_default": "70000000",
    "temp1_input": "41000",
    "temp1_label": "edge",
    "pwm1": "102",
    "pwm1_max": "255",
}


def make_sysfs(root: Path, cards: list[Card]) -> Path:
    """<root>/class/drm/cardN -> ../../devices/pci0000:00/<bus>/drm/cardN; device -> <bus>."""
    drm = root / "class" / "drm"
    drm.mkdir(parents=True, exist_ok=True)
    for card in cards:
        pci = root / "devices" / "pci0000:00" / card.bus_id
        write(pci / "vendor", card.vendor + "\n")
        write(pci / "device", card.device + "\n")
        for name, text in card.files.items():
            write(pci / name, text + ("" if text.endswith("\n") else "\n"))
        if card.hwmon:
            hwmon = pci / "hwmon" / f"hwmon{card.card + 2}"
            for name, text in card.hwmon.items():
                write(hwmon / name, text + "\n")
        card_dir = pci / "drm" / f"card{card.card}"
        card_dir.mkdir(parents=True)
        os.symlink(f"../../../{card.bus_id}", card_dir / "device")
        os.symlink(
            f"../../devices/pci0000:00/{card.bus_id}/drm/card{card.card}", drm / f"card{card.card}"
        )
        for connector in card.connectors:
            name = f"card{card.card}-{connector}"
            (card_dir / name).mkdir()
            os.symlink(
                f"../../devices/pci0000:00/{card.bus_id}/drm/card{card.card}/{name}", drm / name
            )
        render = pci / "drm" / f"renderD{128 + card.card}"
        render.mkdir()
        os.symlink(
            f"../../devices/pci0000:00/{card.bus_id}/drm/renderD{128 + card.card}",
            drm / f"renderD{128 + card.card}",
        )
    write(root / "module" / "amdgpu" / "initstate", "live\n")
    nodes = root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    write(nodes / "0" / "properties", "cpu_cores_count 24\nsimd_count 0\ngfx_target_version 0\n")
    for n, card in enumerate((c for c in cards if c.vendor == "0x1002" and c.gfx), start=1):
        domain, bus, rest = card.bus_id.split(":")
        slot, function = rest.split(".")
        location = (int(bus, 16) << 8) | (int(slot, 16) << 3) | int(function, 16)
        write(
            nodes / str(n) / "properties",
            f"cpu_cores_count 0\nsimd_count 240\ngfx_target_version {card.gfx}\n"
            f"location_id {location}\ndomain {int(domain, 16)}\n",
        )
        if card.gpu_id:
            write(nodes / str(n) / "gpu_id", f"{card.gpu_id}\n")
    return root


def write_kfd_process(sysfs_root: Path, pid: int, vram: dict[int, int]) -> None:
    """<sysfs>/class/kfd/kfd/proc/<pid>/vram_<gpu_id>: bytes, as KFD writes them."""
    base = sysfs_root / "class" / "kfd" / "kfd" / "proc" / str(pid)
    for gpu_id, size in vram.items():
        write(base / f"vram_{gpu_id}", f"{size}\n")
        write(base / f"sdma_{gpu_id}", "0\n")
    write(base / "pasid", "32772\n")


# An excerpt in the format of the PCI ID database (https://pci-ids.ucw.cz), for these cards.
PCI_IDS = """\
# List of PCI ID's (excerpt for tests)
1000  Broadcom / LSI
\t0001  53c810
1002  Advanced Micro Devices, Inc. [AMD/ATI]
\t66a1  Vega 20 [Radeon Pro VII/Radeon Instinct MI50 32GB]
\t\t1002 0834  Radeon Instinct MI50 32GB
\t7489  Navi 33 [Radeon Pro W7500]
\t\t1002 0e0d  Radeon Pro W7500
\t7480  Navi 33 [Radeon RX 7700S/7600/7600S/7600M XT/PRO W7600]
10de  NVIDIA Corporation
\t2684  AD102 [GeForce RTX 4090]
"""


@dataclass
class Proc:
    pid: int
    comm: str
    cgroup: str
    # fd number -> fdinfo text
    fdinfo: dict[int, str] = field(default_factory=dict)


def drm_fdinfo(pdev: str, client_id: int, vram_kib: int, driver: str = "amdgpu") -> str:
    return (
        "pos:\t0\nflags:\t02100002\nmnt_id:\t26\nino:\t1061\n"
        f"drm-driver:\t{driver}\ndrm-pdev:\t{pdev}\ndrm-client-id:\t{client_id}\n"
        "drm-pasid:\t32772\n"
        f"drm-memory-vram:\t{vram_kib} KiB\ndrm-memory-gtt:\t2048 KiB\ndrm-memory-cpu:\t0 KiB\n"
        "amd-memory-visible-vram:\t0 KiB\ndrm-engine-gfx:\t1234567 ns\n"
    )


def make_proc(root: Path, procs: list[Proc], osrelease: str = "6.12.40") -> Path:
    write(root / "sys" / "kernel" / "osrelease", osrelease + "\n")
    for proc in procs:
        base = root / str(proc.pid)
        write(base / "comm", proc.comm + "\n")
        write(base / "cgroup", proc.cgroup + "\n")
        (base / "fdinfo").mkdir(parents=True, exist_ok=True)
        # Ordinary files have plain fdinfo.
        write(base / "fdinfo" / "0", "pos:\t0\nflags:\t02\nmnt_id:\t26\nino:\t5\n")
        for fd, text in proc.fdinfo.items():
            write(base / "fdinfo" / str(fd), text)
    write(root / "self" / "comm", "pytest\n")
    return root
