"""TabbyAPI: a generated `config.yml` with explicit length, cache size and GPU split.

TabbyAPI reads `config.yml` and `api_tokens.yml` from its working directory (it generates and
logs keys when the tokens file is missing, so the launcher writes one from apiKeyFile, or
disables auth). It opens its port only after the model has loaded, and moves silently to
port+1 when the port is busy, so the launcher refuses a busy port before starting it.
Ready = GET /health 200.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher.config import GIB, Instance
from hydra_fleet.launcher.engines.base import LaunchSpec, Probe, base_env, read_key, url, work_dir
from hydra_fleet.launcher.fit import CONTEXT_STEP, Fit

CACHE = {"f16": "FP16", "q8": "Q8", "q6": "Q6", "q4": "Q4"}
OWNED = {
    "network": {"host", "port", "disable_auth"},
    "model": {
        "model_dir",
        "model_name",
        "max_seq_len",
        "cache_size",
        "cache_mode",
        "gpu_split",
        "gpu_split_auto",
    },
}


def config_yml(instance: Instance, fit: Fit, has_key: bool) -> dict[str, Any]:
    model = instance.model.rstrip("/")
    model_dir, _, model_name = model.rpartition("/")
    context = instance.context_length or 0
    model_section: dict[str, Any] = {
        "model_dir": model_dir or ".",
        "model_name": model_name,
        "max_seq_len": context,
        "cache_size": math.ceil(context / CONTEXT_STEP) * CONTEXT_STEP,
        "cache_mode": CACHE.get(instance.cache_type, instance.cache_type),
        "tensor_parallel": False,
        "gpu_split_auto": False,
        "gpu_split": [],
    }
    if fit.gpus:
        model_section["gpu_split"] = [
            math.ceil((g.weights + g.kv) / GIB * 100) / 100 for g in fit.gpus
        ]
    config: dict[str, Any] = {
        "network": {
            "host": instance.host,
            "port": instance.port,
            "disable_auth": not has_key,
            "api_servers": ["OAI"],
        },
        "model": model_section,
        "developer": {},
    }
    for section, values in instance.settings.items():
        if not isinstance(values, dict):
            raise ConfigError("config", f"settings.{section}", "expected an object (a section)")
        for key in values:
            if key in OWNED.get(section, set()):
                raise ConfigError(
                    "config", f"settings.{section}.{key}", "set by the launcher; remove it"
                )
        config.setdefault(section, {}).update(values)
    return config


def spec(instance: Instance, fit: Fit, environ: dict[str, str], reveal: bool) -> LaunchSpec:
    home = work_dir(instance, environ)
    key = read_key(instance, environ, reveal)
    files = {
        str(home / "config.yml"): yaml.safe_dump(
            config_yml(instance, fit, key is not None), sort_keys=False
        )
    }
    secret_files: tuple[str, ...] = ()
    if key is not None:
        tokens = str(home / "api_tokens.yml")
        files[tokens] = yaml.safe_dump({"api_key": key, "admin_key": key})
        secret_files = (tokens,)
    return LaunchSpec(
        argv=[instance.executable or "tabbyapi", "--config", str(home / "config.yml")],
        env=base_env(instance),
        cwd=str(home),
        files=files,
        probe=Probe("http", url(instance, "/health")),
        secret_files=secret_files,
    )
