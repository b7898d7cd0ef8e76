"""The VRAM ledger: every instance pinned to a GPU is planned together with the others on it.

Each instance is planned alone by `fit`; on a shared card what matters is the sum. An
instance is planned to hold weights + KV + its fixed overhead on each of its GPUs (vLLM: its
whole gpuMemoryUtilization share), loaded yet or not (Ollama loads lazily, so the free memory
seen by whichever starts second says nothing); the headroom (fragmentation, activation peaks)
is kept once per card, the largest any of its instances asks for.

Build time: `hydra-launch check --static --config A --config B ...` (what the NixOS module
runs in `system.checks`) and `plan --config A --config B ...` print the per-GPU table and
exit 78 when a card is overcommitted. Run time: `siblingsFile` names the host's other
instances; the preflight counts what those on the same GPUs are planned to hold as taken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_fleet.core import config as core_config
from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher import fit as fitting
from hydra_fleet.launcher.config import GIB, Gpu, Instance, validate
from hydra_fleet.launcher.engines import engine_for
from hydra_fleet.launcher.modelinfo import ModelFacts, model_facts

GpuKey = tuple[str, int]


def gpu_key(gpu: Gpu) -> GpuKey:
    """GPUs are the host's `hydra.gpus` entries: the same card has the same vendor and index."""
    return (gpu.vendor, gpu.index)


@dataclass(frozen=True)
class Hold:
    instance: str
    bytes: int | None  # None: the model's size is unknown (no modelInfo, files not read)
    headroom: int  # what this instance wants kept free on the card
    detail: str


@dataclass
class Card:
    gpu: Gpu
    holds: list[Hold] = field(default_factory=list)

    @property
    def headroom(self) -> int:
        return max((h.headroom for h in self.holds), default=0)

    @property
    def planned(self) -> int:
        return sum(h.bytes or 0 for h in self.holds)

    @property
    def total(self) -> int:
        return self.planned + self.headroom

    @property
    def overcommitted(self) -> bool:
        return self.total > self.gpu.capacity_bytes

    @property
    def unknown(self) -> list[str]:
        return [h.instance for h in self.holds if h.bytes is None]


def facts_for(instance: Instance, *, read_files: bool) -> ModelFacts:
    """The instance's model facts; a sibling's unreadable files fall back to its modelInfo."""
    if not read_files:
        return model_facts(instance, read_files=False)
    try:
        return model_facts(instance)
    except ConfigError:
        return model_facts(instance, read_files=False)


def holds(instance: Instance, *, read_files: bool) -> dict[GpuKey, Hold]:
    """What `instance` is planned to hold on each of its GPUs (declared capacities)."""
    if not instance.gpus:
        return {}
    facts = facts_for(instance, read_files=read_files)
    capacities = [g.capacity_bytes for g in instance.gpus]
    fit = fitting.compute(instance, facts, capacities, [None] * len(capacities))
    result: dict[GpuKey, Hold] = {}
    if not fit.checked or facts.kv_bytes_per_token_elem is None:
        for gpu in instance.gpus:
            result[gpu_key(gpu)] = Hold(instance.name, None, 0, "size unknown (set modelInfo)")
        return result
    vllm = engine_for(instance).claims_utilization
    for row in fit.gpus:
        if vllm:
            hold = Hold(instance.name, row.claim, 0, "gpuMemoryUtilization share")
        else:
            headroom = int(instance.headroom * row.gpu.capacity_bytes)
            detail = (
                f"weights {row.weights / GIB:.2f} + KV {row.kv / GIB:.2f} "
                f"+ overhead {(row.overhead - headroom) / GIB:.2f}"
            )
            hold = Hold(instance.name, row.need - headroom, headroom, detail)
        result[gpu_key(row.gpu)] = hold
    return result


def build(instances: list[Instance], *, read_files: bool) -> list[Card]:
    cards: dict[GpuKey, Card] = {}
    for instance in instances:
        for key, hold in holds(instance, read_files=read_files).items():
            gpu = next(g for g in instance.gpus if gpu_key(g) == key)
            cards.setdefault(key, Card(gpu)).holds.append(hold)
    return [cards[key] for key in sorted(cards)]


def table(cards: list[Card]) -> list[str]:
    """The per-GPU table (GiB): each instance's planned hold, the headroom, the sum."""
    lines = []
    for card in cards:
        verdict = "OVERCOMMITTED" if card.overcommitted else "ok"
        lines.append(
            f"{card.gpu.label}: {card.total / GIB:.2f} of {card.gpu.capacity_bytes / GIB:.2f} GiB"
            f" planned ({verdict})"
        )
        width = max(len(h.instance) for h in card.holds)
        for hold in card.holds:
            size = "?" if hold.bytes is None else f"{hold.bytes / GIB:.2f}"
            lines.append(f"  {hold.instance.ljust(width)}  {size:>7}  {hold.detail}")
        lines.append(
            f"  {'headroom'.ljust(width)}  {card.headroom / GIB:>7.2f}  kept free once per card"
        )
    return lines


def as_dict(cards: list[Card]) -> list[dict[str, Any]]:
    return [
        {
            "gpu": card.gpu.label,
            "index": card.gpu.index,
            "capacityBytes": card.gpu.capacity_bytes,
            "plannedBytes": card.planned,
            "headroomBytes": card.headroom,
            "totalBytes": card.total,
            "overcommitted": card.overcommitted,
            "instances": [
                {"instance": h.instance, "bytes": h.bytes, "detail": h.detail} for h in card.holds
            ],
        }
        for card in cards
    ]


def problems(cards: list[Card]) -> list[str]:
    found = []
    for card in cards:
        if card.overcommitted:
            names = ", ".join(h.instance for h in card.holds)
            found.append(
                f"gpus: {card.gpu.label} is overcommitted: {names} are planned to hold "
                f"{card.total / GIB:.2f} GiB (headroom included) of its "
                f"{card.gpu.capacity_bytes / GIB:.2f} GiB"
            )
    return found


def load_siblings(instance: Instance, source: str) -> list[Instance]:
    """The other instances of this host, from `siblingsFile` (name -> launcher config)."""
    if instance.siblings_file is None:
        return []
    path = Path(instance.siblings_file)
    data = core_config.read_json(path)
    siblings = []
    for name, value in sorted(data.items()):
        if name == instance.name:
            continue
        if not isinstance(value, dict):
            raise ConfigError(source, "siblingsFile", f"{path}: {name}: expected an object")
        where = f"{path} ({name})"
        try:
            sibling = core_config._Converter(where, set()).convert(Instance, value, "")
        except ConfigError as err:
            raise ConfigError(source, "siblingsFile", str(err)) from None
        validate(sibling, where)
        siblings.append(sibling)
    return siblings


def taken_by_siblings(
    instance: Instance, siblings: list[Instance]
) -> dict[int, tuple[int, list[str]]]:
    """Per GPU index of `instance`: bytes its siblings on that card are planned to hold."""
    mine = {gpu_key(g): g.index for g in instance.gpus}
    taken: dict[int, tuple[int, list[str]]] = {}
    for sibling in siblings:
        for key, hold in holds(sibling, read_files=True).items():
            if key not in mine or hold.bytes is None:
                continue
            total, names = taken.get(mine[key], (0, []))
            taken[mine[key]] = (total + hold.bytes, [*names, sibling.name])
    return taken


def dumps(cards: list[Card]) -> str:
    return json.dumps(as_dict(cards), indent=2)
