"""llama.cpp `llama-server`: explicit context, all layers on the GPUs, our split, no --fit.

`--fit off`: the launcher has already fitted; llama.cpp's own fit would silently lower the
context or offload layers to the CPU. Ready = GET /health 200 (503 "Loading model" before).
"""

from __future__ import annotations

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import LaunchSpec, Probe, base_env, flag_args, url
from hydra_fleet.launcher.fit import Fit

CACHE = {"f16": "f16", "bf16": "bf16", "q8": "q8_0", "q4": "q4_0"}
OWNED = {"model", "m", "host", "port", "ctx-size", "c", "n-gpu-layers", "ngl", "tensor-split"}


def spec(instance: Instance, fit: Fit, environ: dict[str, str], reveal: bool) -> LaunchSpec:
    for key in instance.settings:
        if key.lstrip("-") in OWNED:
            raise ConfigError("config", f"settings.{key}", "set by the launcher; remove it")
    argv = [
        instance.executable or "llama-server",
        "--model",
        instance.model,
        "--host",
        instance.host,
        "--port",
        str(instance.port),
        "--ctx-size",
        str(instance.context_length),
        "--n-gpu-layers",
        "999" if instance.gpus else "0",
        "--fit",
        "off",
        "--alias",
        instance.name,
    ]
    if len(instance.gpus) > 1:
        shares = ",".join(f"{share:.3f}" for share in fit.shares) if fit.gpus else None
        argv += ["--split-mode", "layer"]
        if shares:
            argv += ["--tensor-split", shares]
    if instance.cache_type != "f16":
        argv += ["--cache-type-k", CACHE[instance.cache_type]]
        argv += ["--cache-type-v", CACHE[instance.cache_type], "--flash-attn", "on"]
    key_path = instance.api_key_path(environ)
    if key_path is not None:
        argv += ["--api-key-file", str(key_path)]
    argv += flag_args(instance.settings)
    return LaunchSpec(
        argv=argv, env=base_env(instance), probe=Probe("http", url(instance, "/health"))
    )
