"""The instance schema: one JSON file per engine instance, written by the NixOS module.

Keys mirror `services.hydra-inference.instances.<name>` (camelCase); `gpus` holds the facts
of the pinned GPUs from `hydra.gpus`, not indices, so the launcher needs no inventory file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from hydra_fleet.core import config as core_config
from hydra_fleet.core.config import FieldProblem, Port, in_range, non_empty
from hydra_fleet.core.errors import ConfigError

Engine = Literal["tabbyapi", "ollama", "llama-cpp", "vllm", "command"]
Vendor = Literal["nvidia", "amd"]
CacheType = Literal["f16", "bf16", "fp8", "q8", "q6", "q4"]

GIB = 1024**3
Positive = Annotated[int, in_range(1)]
Fraction = Annotated[float, in_range(0.0, 0.95)]


@dataclass(frozen=True)
class Gpu:
    """One entry of `hydra.gpus`."""

    vendor: Vendor
    model: str
    vram_gib: Annotated[float, in_range(0.001)] = field(metadata={"key": "vramGiB"})
    arch: str
    index: Annotated[int, in_range(0)]
    uuid: str | None = None

    @property
    def capacity_bytes(self) -> int:
        return int(self.vram_gib * GIB)

    @property
    def label(self) -> str:
        return f"{self.vendor}:{self.index} {self.model}"


@dataclass(frozen=True)
class ModelInfo:
    """Model facts stated in the config, for models whose files cannot be read here."""

    layers: Positive | None = None
    kv_heads: Positive | None = None
    head_dim: Positive | None = None
    parameters: Annotated[float, in_range(1)] | None = None
    bits_per_weight: Annotated[float, in_range(1, 32)] | None = None
    weights_bytes: Positive | None = None
    max_context: Positive | None = None


@dataclass(frozen=True)
class Readiness:
    """How long loading may take, how often to probe, and when a ready engine counts as dead."""

    timeout: Annotated[float, in_range(1)] = 3600.0
    # Probes are cheap local GETs; 0.25 s keeps the ready-to-READY=1 lag under half a second.
    interval: Annotated[float, in_range(0.05, 60)] = 0.25
    probe_timeout: Annotated[float, in_range(0.1, 120)] = 5.0
    failures: Positive = 3
    gpu_wait: Annotated[float, in_range(0)] = 120.0
    stop_timeout: Annotated[float, in_range(0.1)] = 60.0
    release_timeout: Annotated[float, in_range(0)] = 30.0


@dataclass(frozen=True)
class Instance:
    """One engine instance (`hydra-launch run --config FILE`)."""

    engine: Engine
    port: Port
    name: Annotated[str, non_empty] = "default"
    host: Annotated[str, non_empty] = "127.0.0.1"
    gpus: list[Gpu] = field(default_factory=list)
    model: str = ""
    context_length: Positive | None = None
    cache_type: CacheType = "f16"
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    # A path; `$CREDENTIALS_DIRECTORY/<name>` is resolved at start (systemd LoadCredential).
    api_key_file: str | None = None
    executable: str | None = None
    command: list[str] = field(default_factory=list)
    probe_path: str | None = None
    work_dir: str | None = None
    hsa_override_gfx_version: str | None = None
    model_info: ModelInfo | None = None
    overhead_bytes: Annotated[int, in_range(0)] | None = None
    headroom: Fraction = 0.2
    gpu_memory_utilization: Annotated[float, in_range(0.05, 1.0)] = 0.9
    check_placement: bool = True
    readiness: Readiness = field(default_factory=Readiness)

    def __post_init__(self) -> None:
        if self.engine == "command" and not self.command:
            raise FieldProblem("command", "missing; the command engine needs the argv to run")
        if self.engine != "command" and self.command:
            raise FieldProblem("command", f'only for engine "command", not "{self.engine}"')
        if self.engine != "command" and not self.model:
            raise FieldProblem("model", f'missing; engine "{self.engine}" needs a model')
        if self.engine != "command" and self.context_length is None:
            raise FieldProblem(
                "contextLength", "missing; set it explicitly (engines default to the model max)"
            )
        if len({gpu.vendor for gpu in self.gpus}) > 1:
            raise FieldProblem("gpus", "expected GPUs of one vendor per instance")
        if len({gpu.index for gpu in self.gpus}) != len(self.gpus):
            raise FieldProblem("gpus", "the same GPU index is listed twice")
        if self.engine == "ollama" and self.api_key_file:
            raise FieldProblem("apiKeyFile", "Ollama has no API keys; put the gateway in front")
        if self.probe_path is not None and not self.probe_path.startswith("/"):
            raise FieldProblem(
                "probePath", f"expected a path starting with /, got {self.probe_path!r}"
            )
        pinned = {"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"}
        for key in sorted(pinned & set(self.environment)):
            raise FieldProblem(f"environment.{key}", "set by the launcher from gpus; remove it")

    @property
    def vendor(self) -> Vendor | None:
        return self.gpus[0].vendor if self.gpus else None

    def api_key_path(self, environ: dict[str, str] | None = None) -> Path | None:
        """The API key file, with `$CREDENTIALS_DIRECTORY` expanded from the environment."""
        if self.api_key_file is None:
            return None
        env = os.environ if environ is None else environ
        text = self.api_key_file
        for var in ("${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"):
            if var in text:
                text = text.replace(var, env.get("CREDENTIALS_DIRECTORY", ""))
        return Path(text)


def check_api_key(
    instance: Instance, config_path: Path, environ: dict[str, str], *, at_start: bool
) -> None:
    """Make sure the API key file is readable and not empty, naming the config file if not.

    Outside the unit (`check` at build time) a key under `$CREDENTIALS_DIRECTORY` does
    not exist yet: systemd provides it at start, so it is checked only then.
    """
    if instance.api_key_file is None:
        return
    from_systemd = "CREDENTIALS_DIRECTORY" in instance.api_key_file
    if from_systemd and "CREDENTIALS_DIRECTORY" not in environ and not at_start:
        return
    path = instance.api_key_path(environ)
    assert path is not None
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(
            str(config_path), "apiKeyFile", f"cannot read secret file {path}: {why}"
        ) from err
    if not key:
        raise ConfigError(str(config_path), "apiKeyFile", f"secret file {path} is empty")


def load(path: Path | None) -> Instance:
    """Read and validate an instance config; `ConfigError` (exit 78) on any problem."""
    return core_config.load(Instance, path)
