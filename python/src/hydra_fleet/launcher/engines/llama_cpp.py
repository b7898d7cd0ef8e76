"""llama.cpp `llama-server`: explicit context, all layers on the GPUs, our split, no --fit.

`--fit off`: the launcher has already fitted; llama.cpp's own fit would silently lower the
context or offload layers to the CPU. A build older than `--fit` (llama.cpp PR #16653) has no
fit to turn off and exits 1 on the flag, so the binary's `--help` decides whether it is
passed (and whether `--flash-attn` takes a value). Ready = GET /health 200 (503 "Loading
model" before, and again while a model reloads). KV is allocated for the context padded to
256 tokens.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import (
    Engine,
    Features,
    LaunchSpec,
    Probe,
    base_env,
    flag_args,
    padded,
    url,
)

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit


class LlamaCpp(Engine):
    name = "llama-cpp"
    executable = "llama-server"
    cache_types = {"f16": "f16", "bf16": "bf16", "q8": "q8_0", "q4": "q4_0"}  # noqa: RUF012
    owned = frozenset(
        {"model", "m", "host", "port", "ctx-size", "c", "n-gpu-layers", "ngl", "tensor-split"}
    )
    refusals = (
        "error: invalid argument",
        "error while handling argument",
        "error: unknown argument",
        "invalid value",
        "is not within the file bounds",
        "failed to load model",
        "error loading model",
        "unknown model architecture",
    )

    def kv_tokens(self, instance: Instance) -> int:
        return padded(instance.context_length or 0)

    def version_flag(self, instance: Instance) -> str | None:
        del instance
        return "--help"

    def spec(
        self,
        instance: Instance,
        fit: Fit,
        environ: dict[str, str],
        reveal: bool,
        features: Features | None,
    ) -> LaunchSpec:
        del reveal
        home, directory = self.home_env(instance, environ)
        notes: list[str] = []
        argv = [
            instance.executable or self.executable,
            "--model",
            instance.model,
            "--host",
            instance.listen_address,
            "--port",
            str(instance.port),
            "--ctx-size",
            str(instance.context_length),
            "--n-gpu-layers",
            "0" if instance.cpu_only else "999",
        ]
        if features is None or features.has("--fit"):
            argv += ["--fit", "off"]
        else:
            notes.append(
                "this llama-server has no --fit (older than llama.cpp PR #16653): "
                "nothing to turn off, the flag is left out"
            )
        argv += ["--alias", instance.name]
        if len(instance.gpus) > 1:
            shares = ",".join(f"{share:.3f}" for share in fit.shares) if fit.gpus else None
            argv += ["--split-mode", "layer"]
            if shares:
                argv += ["--tensor-split", shares]
        if instance.cache_type != "f16":
            cache = self.cache_types[instance.cache_type]
            argv += ["--cache-type-k", cache, "--cache-type-v", cache]
            # A quantized V cache needs flash attention; older builds take no value.
            valued = features is None or re.search(r"--flash-attn\s+\[?on", features.text)
            argv += ["--flash-attn", "on"] if valued else ["--flash-attn"]
        key_path = instance.api_key_path(environ)
        if key_path is not None:
            argv += ["--api-key-file", str(key_path)]
        argv += flag_args(instance.settings)
        health = Probe("http", url(instance, "/health"))
        return LaunchSpec(
            argv=argv,
            env={**base_env(instance), **home},
            probe=health,
            liveness=health,
            dirs=(str(directory),),
            notes=tuple(notes),
        )
