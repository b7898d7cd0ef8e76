"""One GPU numbering for the exporter and the launcher: PCI bus order, whatever DRM's order."""

from __future__ import annotations

from pathlib import Path

from hydra_fleet.exporter.backends.amdgpu import AmdgpuBackend
from hydra_fleet.gpu import discovery
from hydra_fleet.gpu.pciids import model_name
from hydra_fleet.launcher.gpu_probe import AmdSysfsProbe
from tests.exporter.kernel_trees import (
    MI50_FILES,
    PCI_IDS,
    W7500_FILES,
    Card,
    make_proc,
    make_sysfs,
)

MI50_BUS = "0000:03:00.0"
W7500_BUS = "0000:0c:00.0"


def probed_out_of_order(root: Path) -> Path:
    """DRM probed the W7500 (bus 0c) as card0 and the MI50 (bus 03) as card1."""
    return make_sysfs(
        root,
        [
            Card(0, W7500_BUS, device="0x7489", files=W7500_FILES, connectors=("DP-1",)),
            Card(1, MI50_BUS, device="0x66a1", files=MI50_FILES),
            Card(2, "0000:01:00.0", vendor="0x10de", device="0x2684"),
        ],
    )


def test_cards_in_pci_order(tmp_path: Path) -> None:
    sysfs = probed_out_of_order(tmp_path / "sys")
    cards = discovery.amd_cards(sysfs)
    assert [(c.index, c.bus_id, c.card.name) for c in cards] == [
        (0, MI50_BUS, "card1"),
        (1, W7500_BUS, "card0"),
    ]
    assert [c.bus_id for c in discovery.drm_cards(sysfs, None)] == [
        "0000:01:00.0",
        MI50_BUS,
        W7500_BUS,
    ]


def test_exporter_and_launcher_agree(tmp_path: Path) -> None:
    """The exporter's index label and the launcher's device index name the same card."""
    sysfs = probed_out_of_order(tmp_path / "sys")
    proc = make_proc(tmp_path / "proc", [])
    exported = {s.index: s.pci_bus_id for s in AmdgpuBackend(sysfs, proc).collect()}
    launcher = {str(d.index): d.name for d in AmdSysfsProbe(sysfs, proc).devices()}
    assert exported == launcher == {"0": MI50_BUS, "1": W7500_BUS}


def test_bus_order_is_numeric() -> None:
    """Hex fields compare as numbers: bus 0a before bus 10, domain 0001 after 0000."""
    buses = ["0001:00:01.0", "0000:10:00.0", "0000:0a:00.0", "0000:0a:00.1"]
    assert sorted(buses, key=discovery.bus_sort_key) == [
        "0000:0a:00.0",
        "0000:0a:00.1",
        "0000:10:00.0",
        "0001:00:01.0",
    ]


def test_pci_ids_lookup(tmp_path: Path) -> None:
    ids = tmp_path / "pci.ids"
    ids.write_text(PCI_IDS)
    assert model_name(ids, "0x1002", "0x7489", "0x1002", "0x0e0d") == "Radeon Pro W7500"
    assert model_name(ids, "0x1002", "0x7489") == "Navi 33 [Radeon Pro W7500]"
    assert model_name(ids, "0x1002", "0x7480").startswith("Navi 33")  # type: ignore[union-attr]
    assert model_name(ids, "0x1002", "0xdead") is None
    assert model_name(ids, "0x10de", "0x2684") == "AD102 [GeForce RTX 4090]"
    assert model_name(tmp_path / "missing.ids", "0x1002", "0x7489") is None
    assert model_name(None, "0x1002", "0x7489") is None
