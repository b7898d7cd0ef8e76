"""Ollama `ollama serve`: configured through its environment.

Ollama answers at once and loads models lazily, so ready = every configured model is loaded
(POST /api/generate with keep_alive -1, then listed in /api/ps). Alive = GET / only: /api/ps
blocks while any model is loading (the loading runner holds the scheduler lock), so probing
it after ready would call a reload (a client's num_ctx, another model, a runner crash) dead.
KV: OLLAMA_NUM_PARALLEL sequences of the context each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_fleet.core.config import FieldProblem
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import Engine, Features, LaunchSpec, Probe, base_env, url

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit


class Ollama(Engine):
    name = "ollama"
    executable = "ollama"
    cache_types = {"f16": "f16", "q8": "q8_0", "q4": "q4_0"}  # noqa: RUF012
    owned = frozenset({"OLLAMA_HOST", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_KV_CACHE_TYPE"})

    def validate(self, instance: Instance) -> None:
        if instance.api_key_file:
            raise FieldProblem("apiKeyFile", "Ollama has no API keys; put the gateway in front")
        super().validate(instance)

    def validate_settings(self, instance: Instance) -> None:
        for key, value in instance.settings.items():
            if key in self.owned:
                raise FieldProblem(f"settings.{key}", "set by the launcher; remove it")
            if not key.startswith("OLLAMA_"):
                raise FieldProblem(f"settings.{key}", "expected an OLLAMA_* variable")
            if key == "OLLAMA_NUM_PARALLEL" and not str(value).isdigit():
                raise FieldProblem(f"settings.{key}", f"expected a whole number, got {value!r}")

    def kv_tokens(self, instance: Instance) -> int:
        parallel = int(instance.settings.get("OLLAMA_NUM_PARALLEL", 1))
        return (instance.context_length or 0) * parallel

    def spec(
        self,
        instance: Instance,
        fit: Fit,
        environ: dict[str, str],
        reveal: bool,
        features: Features | None,
    ) -> LaunchSpec:
        del fit, reveal, features
        home, directory = self.home_env(instance, environ)
        env = base_env(instance)
        env.update(home)
        env.update(
            {
                "OLLAMA_HOST": f"{instance.listen_address}:{instance.port}",
                "OLLAMA_CONTEXT_LENGTH": str(instance.context_length),
                "OLLAMA_KV_CACHE_TYPE": self.cache_types[instance.cache_type],
                "OLLAMA_MODELS": str(directory / "models"),
                "OLLAMA_KEEP_ALIVE": "-1",
                "OLLAMA_NUM_PARALLEL": "1",
                "OLLAMA_MAX_LOADED_MODELS": "1",
            }
        )
        if instance.cache_type != "f16":
            env["OLLAMA_FLASH_ATTENTION"] = "1"
        if len(instance.gpus) > 1:
            env["OLLAMA_SCHED_SPREAD"] = "1"
        env.update({key: str(value) for key, value in instance.settings.items()})
        return LaunchSpec(
            argv=[instance.executable or self.executable, "serve"],
            env=env,
            cwd=str(directory),
            probe=Probe("ollama", url(instance, "/"), models=(instance.model,)),
            liveness=Probe("http", url(instance, "/")),
            dirs=(str(directory),),
        )
