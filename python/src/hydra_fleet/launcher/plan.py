"""`plan`: what `run` would do, with no side effects, as text or JSON."""

from __future__ import annotations

import json
from typing import Any

from hydra_fleet.launcher.config import GIB
from hydra_fleet.launcher.engines import LaunchSpec
from hydra_fleet.launcher.preflight import Preflight

REDACTED = "<redacted>"


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / GIB, 2)


def as_dict(pre: Preflight, spec: LaunchSpec) -> dict[str, Any]:
    fit = pre.fit
    env = {k: (REDACTED if k in spec.secret_env else v) for k, v in spec.env.items()}
    files = {k: (REDACTED if k in spec.secret_files else v) for k, v in spec.files.items()}
    facts = pre.facts
    live = spec.liveness or spec.probe
    return {
        "instance": pre.instance.name,
        "engine": pre.instance.engine,
        "argv": spec.argv,
        "env": env,
        "cwd": spec.cwd,
        "files": files,
        "probe": {
            "kind": spec.probe.kind,
            "url": spec.probe.url,
            "models": list(spec.probe.models),
        },
        "liveness": {
            "kind": live.kind,
            "url": live.url,
            "interval": pre.instance.readiness.liveness.interval,
            "timeout": pre.instance.readiness.liveness.timeout,
            "failures": pre.instance.readiness.failures,
        },
        "model": {
            "source": facts.source,
            "layers": facts.layers,
            "kvHeads": facts.kv_heads,
            "headDim": facts.head_dim,
            "weightsBytes": facts.weights_bytes,
            "maxContext": facts.max_context,
        },
        "fit": {
            "checked": fit.checked,
            "context": fit.context,
            "cacheType": fit.cache_type,
            "split": fit.rule,
            "overhead": fit.overhead_note,
            "largestContext": fit.largest_context,
            "gpus": [
                {
                    "gpu": g.gpu.label,
                    "index": g.gpu.index,
                    "uuid": g.gpu.uuid,
                    "share": round(g.share, 4),
                    "weightsBytes": g.weights,
                    "kvBytes": g.kv,
                    "overheadBytes": g.overhead,
                    "needBytes": g.need,
                    "capacityBytes": g.capacity,
                    "freeBytes": g.free,
                    "fits": g.fits_capacity,
                    "fitsNow": g.fits_free,
                }
                for g in fit.gpus
            ],
        },
        "fatal": pre.fatal,
        "temporary": pre.temporary,
        "notes": [*pre.notes, *spec.notes],
        "verdict": pre.verdict,
    }


def as_json(pre: Preflight, spec: LaunchSpec) -> str:
    return json.dumps(as_dict(pre, spec), indent=2)


def as_text(pre: Preflight, spec: LaunchSpec) -> str:
    data = as_dict(pre, spec)
    lines = [
        f"instance  {data['instance']} ({data['engine']})",
        f"argv      {' '.join(spec.argv)}",
    ]
    lines += [f"env       {k}={v}" for k, v in data["env"].items()]
    if spec.cwd:
        lines.append(f"cwd       {spec.cwd}")
    for name, text in data["files"].items():
        lines.append(f"file      {name}")
        lines += [f"            {line}" for line in str(text).splitlines()]
    models = f" (models: {', '.join(spec.probe.models)})" if spec.probe.models else ""
    lines.append(f"ready     {spec.probe.kind} {spec.probe.url}{models}")
    live = data["liveness"]
    lines.append(
        f"alive     {live['kind']} {live['url']} every {live['interval']:g}s "
        f"(timeout {live['timeout']:g}s, {live['failures']} failures in a row end the run)"
    )
    fit = pre.fit
    facts = pre.facts
    if fit.checked:
        lines.append(
            f"model     {facts.source}: {facts.layers} layers, {facts.kv_heads} KV heads, "
            f"head dim {facts.head_dim}, weights {_gib(facts.weights_bytes)} GiB"
        )
        lines.append(f"fit       context {fit.context}, cache {fit.cache_type}, split {fit.rule}")
        lines.append(f"          {fit.overhead_note}")
        header = ("GPU", "share", "weights", "KV", "overhead", "need", "of", "free", "")
        rows = [header]
        for g in fit.gpus:
            rows.append(
                (
                    g.gpu.label,
                    f"{g.share:.2f}",
                    f"{_gib(g.weights):.2f}",
                    f"{_gib(g.kv):.2f}",
                    f"{_gib(g.overhead):.2f}",
                    f"{_gib(g.need):.2f}",
                    f"{_gib(g.capacity):.2f}",
                    "?" if g.free is None else f"{_gib(g.free):.2f}",
                    "ok" if g.fits_capacity and g.fits_free else "NO",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for row in rows:
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("          " + "  ".join(cells).rstrip())
        lines.append("          (GiB)")
        if fit.largest_context is not None:
            lines.append(f"          largest context that fits: {fit.largest_context}")
    lines += [f"note      {note}" for note in [*pre.notes, *spec.notes]]
    lines.append(f"verdict   {pre.verdict}")
    return "\n".join(lines)
