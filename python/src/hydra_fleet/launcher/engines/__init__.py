"""The engines, one object each (see `engines.base.Engine`), and the launch spec they build."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import Engine, Features, LaunchSpec, Probe
from hydra_fleet.launcher.engines.command import Command
from hydra_fleet.launcher.engines.llama_cpp import LlamaCpp
from hydra_fleet.launcher.engines.ollama import Ollama
from hydra_fleet.launcher.engines.tabbyapi import TabbyApi
from hydra_fleet.launcher.engines.vllm import Vllm

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit

ENGINES: dict[str, Engine] = {
    engine.name: engine for engine in (TabbyApi(), Ollama(), LlamaCpp(), Vllm(), Command())
}


def engine_for(instance: Instance) -> Engine:
    return ENGINES[instance.engine]


def launch_spec(
    instance: Instance,
    fit: Fit,
    environ: dict[str, str],
    *,
    reveal: bool = False,
    features: Features | None = None,
) -> LaunchSpec:
    """The child's argv/env/files/probes; secrets only when `reveal` (at run, never in plans).

    `features`: what the engine's binary said about itself; None = assume the current build.
    """
    spec = engine_for(instance).spec(instance, fit, environ, reveal, features)
    env = dict(spec.env)
    env.update(instance.environment)
    notes = spec.notes
    return LaunchSpec(
        argv=spec.argv,
        env=env,
        probe=spec.probe,
        liveness=spec.liveness,
        cwd=spec.cwd,
        files=spec.files,
        secret_env=spec.secret_env,
        secret_files=spec.secret_files,
        dirs=spec.dirs,
        notes=notes,
    )


__all__ = ["ENGINES", "Engine", "Features", "LaunchSpec", "Probe", "engine_for", "launch_spec"]
