"""A plain command (ComfyUI, a stand-in server): argv as given, pinned like the others.

Ready = GET probePath answers 200 when one is set, else the port accepts connections.
"""

from __future__ import annotations

from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import LaunchSpec, Probe, base_env, url
from hydra_fleet.launcher.fit import Fit


def spec(instance: Instance, fit: Fit, environ: dict[str, str], reveal: bool) -> LaunchSpec:
    del fit, environ, reveal
    if instance.probe_path is not None:
        probe = Probe("http", url(instance, instance.probe_path))
    else:
        probe = Probe("tcp", f"tcp://{instance.host}:{instance.port}")
    return LaunchSpec(argv=list(instance.command), env=base_env(instance), probe=probe)
