"""vLLM `vllm serve`: tensor parallel over every pinned GPU, explicit memory share and length.

The API key goes in `VLLM_API_KEY` (vLLM has no key-file flag), read from the file at start.
A bf16 or fp8 KV cache needs `--kv-cache-dtype` (without it the model's dtype is used). vLLM
writes its compile cache under ~/.cache, so HOME is the state directory.
Ready = GET /health 200; vLLM refuses connections until the engine is up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import (
    Engine,
    Features,
    LaunchSpec,
    Probe,
    base_env,
    flag_args,
    read_key,
    url,
)

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit


class Vllm(Engine):
    name = "vllm"
    executable = "vllm"
    # f16: "auto" (the model's dtype, fp16/bf16); the others must be asked for.
    cache_types = {"f16": "auto", "bf16": "bfloat16", "fp8": "fp8"}  # noqa: RUF012
    owned = frozenset(
        {
            "host",
            "port",
            "tensor-parallel-size",
            "gpu-memory-utilization",
            "max-model-len",
            "api-key",
            "kv-cache-dtype",
        }
    )
    refusals = ("error: argument", "error: unrecognized arguments", "ValidationError")
    claims_utilization = True

    def tensor_parallel(self, instance: Instance) -> bool:
        del instance
        return True

    def spec(
        self,
        instance: Instance,
        fit: Fit,
        environ: dict[str, str],
        reveal: bool,
        features: Features | None,
    ) -> LaunchSpec:
        del fit, features
        home, directory = self.home_env(instance, environ)
        argv = [
            instance.executable or self.executable,
            "serve",
            instance.model,
            "--host",
            instance.listen_address,
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
        if instance.cache_type != "f16":
            argv += ["--kv-cache-dtype", self.cache_types[instance.cache_type]]
        argv += flag_args(instance.settings)
        env = {**base_env(instance), **home}
        secret: tuple[str, ...] = ()
        if (api_key := read_key(instance, environ, reveal)) is not None:
            env["VLLM_API_KEY"] = api_key
            secret = ("VLLM_API_KEY",)
        health = Probe("http", url(instance, "/health"))
        return LaunchSpec(
            argv=argv,
            env=env,
            probe=health,
            liveness=health,
            secret_env=secret,
            dirs=(str(directory),),
        )
