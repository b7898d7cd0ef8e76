"""vLLM `vllm serve`: tensor parallel over every pinned GPU, explicit memory share and length.

The API key goes in `VLLM_API_KEY` (vLLM has no key-file flag), read from the file at start.
Ready = GET /health 200; vLLM refuses connections until the engine is up.
"""

from __future__ import annotations

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import (
    LaunchSpec,
    Probe,
    base_env,
    flag_args,
    read_key,
    url,
)
from hydra_fleet.launcher.fit import Fit

OWNED = {
    "host",
    "port",
    "tensor-parallel-size",
    "gpu-memory-utilization",
    "max-model-len",
    "api-key",
}


def spec(instance: Instance, fit: Fit, environ: dict[str, str], reveal: bool) -> LaunchSpec:
    del fit
    for key in instance.settings:
        if key.lstrip("-") in OWNED:
            raise ConfigError("config", f"settings.{key}", "set by the launcher; remove it")
    argv = [
        instance.executable or "vllm",
        "serve",
        instance.model,
        "--host",
        instance.host,
        "--port",
        str(instance.port),
        "--tensor-parallel-size",
        str(max(len(instance.gpus), 1)),
        "--gpu-memory-utilization",
        f"{instance.gpu_memory_utilization:g}",
        "--max-model-len",
        str(instance.context_length),
        "--served-model-name",
        instance.name,
    ]
    if instance.cache_type == "fp8":
        argv += ["--kv-cache-dtype", "fp8"]
    argv += flag_args(instance.settings)
    env = base_env(instance)
    secret: tuple[str, ...] = ()
    if (api_key := read_key(instance, environ, reveal)) is not None:
        env["VLLM_API_KEY"] = api_key
        secret = ("VLLM_API_KEY",)
    return LaunchSpec(
        argv=argv, env=env, probe=Probe("http", url(instance, "/health")), secret_env=secret
    )
