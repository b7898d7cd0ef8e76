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
from hydra_fleet.core import secrets
from hydra_fleet.core.config import FieldProblem, Host, Port, in_range, non_empty
from hydra_fleet.core.errors import ConfigError


def known_engine(value: str) -> str | None:
    """One of the engines of `launcher.engines` (each module there is one)."""
    from hydra_fleet.launcher.engines import ENGINES  # noqa: PLC0415 - engines import this module

    if value in ENGINES:
        return None
    return "expected one of " + ", ".join(f'"{name}"' for name in ENGINES) + f", got {value!r}"


Engine = Annotated[str, known_engine]
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
class Liveness:
    """Probing after READY=1: its own slower cadence and longer timeout.

    An engine busy generating answers its probe late; LiteLLM and Ollama log every probe.
    A model reloading after ready (llama-server's 503 "Loading model") counts as loading,
    not as a failure, for up to `readiness.timeout`; `readiness.failures` failed probes in a
    row end the run.
    """

    interval: Annotated[float, in_range(0.5, 3600)] = 10.0
    timeout: Annotated[float, in_range(0.5, 600)] = 30.0


@dataclass(frozen=True)
class Readiness:
    """How long loading may take, how often to probe, and when a ready engine counts as dead."""

    timeout: Annotated[float, in_range(1)] = 3600.0
    # Probes are cheap local GETs; 0.25 s keeps the ready-to-READY=1 lag under half a second.
    interval: Annotated[float, in_range(0.05, 60)] = 0.25
    probe_timeout: Annotated[float, in_range(0.1, 120)] = 5.0
    failures: Positive = 3
    liveness: Liveness = field(default_factory=Liveness)
    gpu_wait: Annotated[float, in_range(0)] = 120.0
    stop_timeout: Annotated[float, in_range(0.1)] = 60.0
    release_timeout: Annotated[float, in_range(0)] = 30.0


@dataclass(frozen=True)
class Instance:
    """One engine instance (`hydra-launch run --config FILE`)."""

    engine: Engine
    port: Port
    name: Annotated[str, non_empty] = "default"
    listen_address: Host = "127.0.0.1"
    gpus: list[Gpu] = field(default_factory=list)
    # No GPUs: the engine runs on the CPU only when the instance says so (never by accident).
    cpu_only: bool = False
    model: str = ""
    context_length: Positive | None = None
    cache_type: CacheType = "f16"
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    # A path; `$CREDENTIALS_DIRECTORY/<name>` is resolved at start (systemd LoadCredential).
    api_key_file: str | None = None
    # TabbyAPI's admin key (load/unload models); without it a random one nobody is told.
    admin_key_file: str | None = None
    executable: str | None = None
    command: list[str] = field(default_factory=list)
    probe_path: str | None = None
    work_dir: str | None = None
    # TabbyAPI: its checkout (holds `backends/`), to check the model's quantization against.
    engine_source: str | None = None
    # JSON: instance name -> launcher config of every other instance on this host (the VRAM
    # ledger: what siblings on the same GPUs are planned to hold is not free for this one).
    siblings_file: str | None = None
    hsa_override_gfx_version: str | None = None
    model_info: ModelInfo | None = None
    overhead_bytes: Annotated[int, in_range(0)] | None = None
    headroom: Fraction = 0.2
    gpu_memory_utilization: Annotated[float, in_range(0.05, 1.0)] = 0.9
    check_placement: bool = True
    readiness: Readiness = field(default_factory=Readiness)

    def __post_init__(self) -> None:
        if len({gpu.vendor for gpu in self.gpus}) > 1:
            raise FieldProblem("gpus", "expected GPUs of one vendor per instance")
        if len({gpu.index for gpu in self.gpus}) != len(self.gpus):
            raise FieldProblem("gpus", "the same GPU index is listed twice")
        if self.cpu_only and self.gpus:
            raise FieldProblem("cpuOnly", "true with GPUs pinned; remove one of them")
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
        return expand_credentials(self.api_key_file, environ)

    def admin_key_path(self, environ: dict[str, str] | None = None) -> Path | None:
        return expand_credentials(self.admin_key_file, environ)


def expand_credentials(text: str | None, environ: dict[str, str] | None) -> Path | None:
    """A secret path, with `$CREDENTIALS_DIRECTORY` expanded from the environment."""
    if text is None:
        return None
    env = os.environ if environ is None else environ
    for var in ("${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"):
        if var in text:
            text = text.replace(var, env.get("CREDENTIALS_DIRECTORY", ""))
    return Path(text)


def check_api_key(
    instance: Instance, config_path: Path, environ: dict[str, str], *, at_start: bool
) -> None:
    """Make sure the key files are readable and not empty, naming the config file if not.

    Outside the unit (`check` at build time) a key under `$CREDENTIALS_DIRECTORY` does
    not exist yet: systemd provides it at start, so it is checked only then.
    """
    secrets = (("apiKeyFile", instance.api_key_file), ("adminKeyFile", instance.admin_key_file))
    for key, value in secrets:
        _check_secret(key, value, config_path, environ, at_start=at_start)


def _check_secret(
    key: str, value: str | None, config_path: Path, environ: dict[str, str], *, at_start: bool
) -> None:
    if value is None:
        return
    from_systemd = "CREDENTIALS_DIRECTORY" in value
    if from_systemd and "CREDENTIALS_DIRECTORY" not in environ and not at_start:
        return
    path = expand_credentials(value, environ)
    assert path is not None
    secrets.read_secret(path, str(config_path), key)


def load(path: Path | None) -> Instance:
    """Read and validate an instance config; `ConfigError` (exit 78) on any problem.

    The engine's own rules (cache types, owned settings, CPU only by name) are checked here
    too, so `check`, `plan` and `run` refuse the same things with the same message.
    """
    instance = core_config.load(Instance, path)
    validate(instance, str(path) if path is not None else "(no config file)")
    return instance


def validate(instance: Instance, source: str) -> None:
    from hydra_fleet.launcher.engines import engine_for  # noqa: PLC0415 - engines import us

    try:
        engine_for(instance).validate(instance)
    except FieldProblem as err:
        raise ConfigError(source, err.key, err.problem) from None
