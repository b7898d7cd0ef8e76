"""The engines, one object each (see `engines.base.Engine`), and the launch spec they build."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import Engine, Features, LaunchSpec, Probe

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit


def _discover() -> dict[str, Engine]:
    """Every engine of this package, by name: each module but `base` defines one `Engine`
    subclass, so adding an engine is adding its module (and its tests)."""
    found: dict[str, Engine] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Engine)
                and value is not Engine
                and value.__module__ == module.__name__
            ):
                engine = value()
                found[engine.name] = engine
    return dict(sorted(found.items()))


ENGINES: dict[str, Engine] = _discover()


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
