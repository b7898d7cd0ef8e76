"""Per-engine launch specs."""

from __future__ import annotations

from collections.abc import Callable

from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines import command, llama_cpp, ollama, tabbyapi, vllm
from hydra_fleet.launcher.engines.base import LaunchSpec, Probe
from hydra_fleet.launcher.fit import Fit

SpecFn = Callable[[Instance, Fit, dict[str, str], bool], LaunchSpec]

ENGINES: dict[str, SpecFn] = {
    "tabbyapi": tabbyapi.spec,
    "ollama": ollama.spec,
    "llama-cpp": llama_cpp.spec,
    "vllm": vllm.spec,
    "command": command.spec,
}


def launch_spec(
    instance: Instance, fit: Fit, environ: dict[str, str], *, reveal: bool = False
) -> LaunchSpec:
    """The child's argv/env/files/probe; secrets only when `reveal` (at run, never in plans)."""
    spec = ENGINES[instance.engine](instance, fit, environ, reveal)
    env = dict(spec.env)
    for key, value in instance.environment.items():
        env[key] = value
    return LaunchSpec(
        argv=spec.argv,
        env=env,
        probe=spec.probe,
        cwd=spec.cwd,
        files=spec.files,
        secret_env=spec.secret_env,
        secret_files=spec.secret_files,
    )


__all__ = ["LaunchSpec", "Probe", "launch_spec"]
