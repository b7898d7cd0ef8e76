"""Model names from the PCI ID database (`pci.ids`), for cards whose sysfs has no product_name.

The amdgpu driver writes `product_name` only for some boards (Instinct cards); a Radeon Pro
W7500 would otherwise show as "AMD GPU 0x7489". NixOS ships the database in `hwdata`.
"""

from __future__ import annotations

import functools
from pathlib import Path

DEFAULT_PATHS: tuple[Path, ...] = (
    Path("/run/current-system/sw/share/hwdata/pci.ids"),
    Path("/usr/share/hwdata/pci.ids"),
    Path("/usr/share/misc/pci.ids"),
)


def find_database(configured: Path | None = None) -> Path | None:
    """The configured file, else the first of the usual places that exists."""
    if configured is not None:
        return configured
    return next((path for path in DEFAULT_PATHS if path.is_file()), None)


def _hex(value: str) -> str:
    return value.strip().lower().removeprefix("0x").zfill(4)


@functools.lru_cache(maxsize=64)
def _vendor_section(database: Path, vendor: str) -> tuple[str, ...]:
    """The device and subsystem lines under `vendor` (4 hex digits), read once per file."""
    lines: list[str] = []
    inside = False
    try:
        with database.open(encoding="utf-8", errors="replace") as ids:
            for line in ids:
                if not line.strip() or line.startswith("#"):
                    continue
                if not line.startswith("\t"):
                    if inside:
                        break  # the next vendor
                    inside = line[:4].lower() == vendor and line[4:6] == "  "
                    continue
                if inside:
                    lines.append(line.rstrip("\n"))
    except OSError:
        return ()
    return tuple(lines)


def model_name(
    database: Path | None,
    vendor_id: str,
    device_id: str,
    subsystem_vendor: str | None = None,
    subsystem_device: str | None = None,
) -> str | None:
    """The board's name (the subsystem entry when listed, else the chip's), or None."""
    if database is None:
        return None
    vendor, device = _hex(vendor_id), _hex(device_id)
    chip: str | None = None
    subsystem = (
        f"{_hex(subsystem_vendor)} {_hex(subsystem_device)}"
        if subsystem_vendor and subsystem_device
        else None
    )
    for line in _vendor_section(database, vendor):
        if not line.startswith("\t\t"):
            if chip is not None:
                break  # past this device's subsystems
            ident, _, name = line.strip().partition("  ")
            if ident.lower() == device:
                chip = name.strip()
            continue
        if chip is not None and subsystem is not None:
            ident, _, name = line.strip().partition("  ")
            if ident.lower() == subsystem:
                return name.strip()
    return chip
