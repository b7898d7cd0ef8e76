"""TabbyAPI: a generated `config.yml` with explicit length, cache size and GPU split.

TabbyAPI reads `config.yml` and `api_tokens.yml` from its working directory and writes
`logs/` there, so the working directory is the launcher's (the state directory), never a
read-only or stale one; it generates and logs keys when the tokens file is missing, so the
launcher writes one (the API key from apiKeyFile; the admin key from adminKeyFile, else a
random one nobody is told, so a client cannot unload the model). It opens its port only after
the model has loaded and moves silently to port+1 when the port is busy, so the launcher
refuses a busy port before starting it. Ready = GET /health 200.

Backends: TabbyAPI main dropped ExLlamaV2 in c8b9a8f (2026-07-14) and refuses EXL2 models at
load; 79126f9 is the last commit with it. The model's `quantization_config.quant_method` is
checked against the checkout's `backends/` before start (`engineSource`, else found from the
executable). `gpu_split` (GiB per GPU): weights + KV plus the room the plan leaves on each GPU
(evenly under tensor parallel, where the split sets the ratio).
"""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hydra_fleet.core.config import FieldProblem
from hydra_fleet.launcher.config import GIB, Instance
from hydra_fleet.launcher.engines.base import (
    Engine,
    Features,
    LaunchSpec,
    Probe,
    base_env,
    padded,
    read_key,
    read_secret,
    url,
)

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit

LAST_EXLLAMAV2 = "79126f9"
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
BACKENDS = {"exl2": "exllamav2", "exl3": "exllamav3"}


def quant_method(model: Path) -> str | None:
    """exl2/exl3/... from the model's config.json (or EXL3's quantization_config.json)."""
    for name, key in (("config.json", "quantization_config"), ("quantization_config.json", "")):
        try:
            data = json.loads((model / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        section = data.get(key) if key else data
        if isinstance(section, dict) and isinstance(section.get("quant_method"), str):
            return str(section["quant_method"]).lower()
    return None


def checkout(instance: Instance) -> Path | None:
    """The TabbyAPI source tree: `engineSource`, else a parent of the executable with backends/."""
    if instance.engine_source:
        return Path(instance.engine_source)
    if not instance.executable:
        return None
    start = Path(instance.executable).resolve()
    for parent in list(start.parents)[:4]:
        if (parent / "backends").is_dir() and (parent / "main.py").is_file():
            return parent
        share = parent / "share" / "tabbyapi"
        if (share / "backends").is_dir():
            return share
    return None


class TabbyApi(Engine):
    name = "tabbyapi"
    executable = "tabbyapi"
    cache_types = {"f16": "FP16", "q8": "Q8", "q6": "Q6", "q4": "Q4"}  # noqa: RUF012
    refusals = ("require the exllamav2 backend", "ValidationError", "FileNotFoundError")

    def validate_settings(self, instance: Instance) -> None:
        for section, values in instance.settings.items():
            if not isinstance(values, dict):
                raise FieldProblem(f"settings.{section}", "expected an object (a section)")
            for key in values:
                if key in OWNED.get(section, set()):
                    raise FieldProblem(
                        f"settings.{section}.{key}", "set by the launcher; remove it"
                    )

    def tensor_parallel(self, instance: Instance) -> bool:
        model = instance.settings.get("model")
        return isinstance(model, dict) and model.get("tensor_parallel") is True

    def kv_tokens(self, instance: Instance) -> int:
        return padded(instance.context_length or 0)  # cache_size: a multiple of 256

    def model_problems(self, instance: Instance, static: bool) -> tuple[list[str], list[str]]:
        """The model's quantization against the checkout's backends (not in --static)."""
        model = Path(instance.model)
        if static or not model.is_dir():
            return [], []
        method = quant_method(model)
        backend = BACKENDS.get(method or "")
        if backend is None:
            return [], []
        source = checkout(instance)
        if source is None:
            return [], [
                f"{method} model: TabbyAPI's backends not checked "
                "(set engineSource to its checkout)"
            ]
        if (source / "backends" / backend).is_dir():
            return [], []
        if method == "exl2":
            why = (
                f"the TabbyAPI checkout {source} has no ExLlamaV2 backend (removed from main in "
                f"c8b9a8f, 2026-07-14); pin TabbyAPI at {LAST_EXLLAMAV2}, the last commit with "
                "ExLlamaV2, or use an EXL3 model"
            )
        else:
            why = f"the TabbyAPI checkout {source} has no {backend} backend (backends/{backend})"
        return [f"model: {method} model {model}: {why}"], []

    def gpu_split(self, instance: Instance, fit: Fit) -> list[float]:
        rows = fit.gpus
        used = [g.weights + g.kv for g in rows]
        room = [max(g.capacity - g.overhead - u, 0) for g, u in zip(rows, used, strict=True)]
        if self.tensor_parallel(instance):
            room = [min(room)] * len(rows)
        return [math.floor((u + r) / GIB * 100) / 100 for u, r in zip(used, room, strict=True)]

    def config_yml(self, instance: Instance, fit: Fit, auth: bool) -> dict[str, Any]:
        model = instance.model.rstrip("/")
        model_dir, _, model_name = model.rpartition("/")
        model_section: dict[str, Any] = {
            "model_dir": model_dir or ".",
            "model_name": model_name,
            "max_seq_len": instance.context_length,
            "cache_size": self.kv_tokens(instance),
            "cache_mode": self.cache_types[instance.cache_type],
            "tensor_parallel": False,
            "gpu_split_auto": False,
            "gpu_split": self.gpu_split(instance, fit) if fit.gpus else [],
        }
        config: dict[str, Any] = {
            "network": {
                "host": instance.listen_address,
                "port": instance.port,
                "disable_auth": not auth,
                "api_servers": ["OAI"],
            },
            "model": model_section,
            "developer": {},
        }
        for section, values in instance.settings.items():
            config.setdefault(section, {}).update(values)
        return config

    def spec(
        self,
        instance: Instance,
        fit: Fit,
        environ: dict[str, str],
        reveal: bool,
        features: Features | None,
    ) -> LaunchSpec:
        del features
        home, directory = self.home_env(instance, environ)
        key = read_key(instance, environ, reveal)
        admin = read_secret(instance.admin_key_path(environ), "adminKeyFile", reveal)
        auth = key is not None or admin is not None
        config = self.config_yml(instance, fit, auth)
        files = {str(directory / "config.yml"): yaml.safe_dump(config, sort_keys=False)}
        secret_files: tuple[str, ...] = ()
        if auth:
            unknown = secrets.token_urlsafe(32) if reveal else "<random, told to no one>"
            tokens = str(directory / "api_tokens.yml")
            files[tokens] = yaml.safe_dump(
                {"api_key": key or unknown, "admin_key": admin or unknown}
            )
            secret_files = (tokens,)
        health = Probe("http", url(instance, "/health"))
        return LaunchSpec(
            argv=[
                instance.executable or self.executable,
                "--config",
                str(directory / "config.yml"),
            ],
            env={**base_env(instance), **home},
            cwd=str(directory),
            files=files,
            probe=health,
            liveness=health,
            secret_files=secret_files,
            dirs=(str(directory), str(directory / "logs")),
        )
