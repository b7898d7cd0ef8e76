"""Ollama `ollama serve`: configured through its environment.

Ollama answers at once and loads models lazily, so ready = every configured model is loaded
(POST /api/generate with keep_alive -1, then listed in /api/ps).
"""

from __future__ import annotations

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import LaunchSpec, Probe, base_env, url, work_dir
from hydra_fleet.launcher.fit import Fit

CACHE = {"f16": "f16", "q8": "q8_0", "q4": "q4_0"}
OWNED = {"OLLAMA_HOST", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_KV_CACHE_TYPE"}


def spec(instance: Instance, fit: Fit, environ: dict[str, str], reveal: bool) -> LaunchSpec:
    del fit, reveal
    home = work_dir(instance, environ)
    env = base_env(instance)
    env.update(
        {
            "HOME": str(home),
            "OLLAMA_HOST": f"{instance.host}:{instance.port}",
            "OLLAMA_CONTEXT_LENGTH": str(instance.context_length),
            "OLLAMA_KV_CACHE_TYPE": CACHE.get(instance.cache_type, instance.cache_type),
            "OLLAMA_MODELS": str(home / "models"),
            "OLLAMA_KEEP_ALIVE": "-1",
            "OLLAMA_NUM_PARALLEL": "1",
            "OLLAMA_MAX_LOADED_MODELS": "1",
        }
    )
    if instance.cache_type != "f16":
        env["OLLAMA_FLASH_ATTENTION"] = "1"
    if len(instance.gpus) > 1:
        env["OLLAMA_SCHED_SPREAD"] = "1"
    for key, value in instance.settings.items():
        if key in OWNED:
            raise ConfigError("config", f"settings.{key}", "set by the launcher; remove it")
        if not key.startswith("OLLAMA_"):
            raise ConfigError("config", f"settings.{key}", "expected an OLLAMA_* variable")
        env[key] = str(value)
    return LaunchSpec(
        argv=[instance.executable or "ollama", "serve"],
        env=env,
        cwd=str(home),
        probe=Probe("ollama", url(instance, "/"), models=(instance.model,)),
    )
