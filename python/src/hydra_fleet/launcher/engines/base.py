"""What every engine is: one object that owns its whole contract with the launcher.

An `Engine` knows its argv or config file, its GPU-pinning variables, its readiness probe
(start-up) and its liveness probe (after READY=1), the cache types it has, its split rule
and KV formula, the settings it owns, the lines it prints when it refuses its arguments or
its model, and what to ask its binary before depending on a flag. Adding an engine is one
module under `engines/` and one entry in `engines.ENGINES`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from hydra_fleet.core import secrets
from hydra_fleet.core.config import FieldProblem
from hydra_fleet.launcher.config import Gpu, Instance

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit

ProbeKind = Literal["http", "tcp", "ollama"]
CONTEXT_STEP = 256


@dataclass(frozen=True)
class Probe:
    """`http`: GET url answers 200 (503 = still loading). `tcp`: the port accepts.
    `ollama`: GET url says "Ollama is running", then every model in `models` is loaded
    (POST /api/generate with keep_alive -1, confirmed in /api/ps)."""

    kind: ProbeKind
    url: str
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]  # set on the child on top of the launcher's own environment
    probe: Probe  # readiness: until READY=1
    liveness: Probe | None = None  # after READY=1 (None: the readiness probe)
    cwd: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # written before start; may hold keys
    secret_env: tuple[str, ...] = ()  # env keys whose values are secrets (hidden in plans)
    secret_files: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()  # created before start (HOME, caches)
    notes: tuple[str, ...] = ()  # what the plan should say about this argv


@dataclass(frozen=True)
class Features:
    """What the engine's binary said about itself (`--version`/`--help`), when asked."""

    text: str

    def has(self, flag: str) -> bool:
        return re.search(rf"(^|[\s,]){re.escape(flag)}([\s,=]|$)", self.text, re.M) is not None


class Engine:
    """The base contract; each engine module subclasses it."""

    name: ClassVar[str]
    executable: ClassVar[str]
    # hydra's cacheType -> the engine's own spelling; the keys are what the engine supports.
    cache_types: ClassVar[dict[str, str]]
    owned: ClassVar[frozenset[str]] = frozenset()
    # Output lines that mean "your arguments or your model are wrong" when the engine exits
    # during start-up: a configuration error (78), not something a restart fixes.
    refusals: ClassVar[tuple[str, ...]] = ()
    # ...unless the output also says memory ran out: that may clear (another process held it).
    transient: ClassVar[tuple[str, ...]] = (
        "out of memory",
        "failed to allocate",
        "cudaMalloc",
        "hipMalloc",
        "OutOfDeviceMemory",
    )
    # vLLM: claims gpuMemoryUtilization x capacity and fits inside it (no headroom).
    claims_utilization: ClassVar[bool] = False
    needs_model: ClassVar[bool] = True
    # Where the engine keeps HOME and XDG_CACHE_HOME: the state directory.
    private_home: ClassVar[bool] = True

    # ---- validation at config load --------------------------------------------------

    def validate(self, instance: Instance) -> None:
        """Raise `FieldProblem` for what this engine cannot run as written."""
        if instance.command:
            raise FieldProblem("command", f'only for engine "command", not "{self.name}"')
        if self.needs_model and not instance.model:
            raise FieldProblem("model", f'missing; engine "{self.name}" needs a model')
        if instance.context_length is None:
            raise FieldProblem(
                "contextLength", "missing; set it explicitly (engines default to the model max)"
            )
        if instance.cache_type not in self.cache_types:
            supported = ", ".join(sorted(self.cache_types))
            raise FieldProblem(
                "cacheType",
                f'"{instance.cache_type}" is not a cache type {self.name} has ({supported})',
            )
        if not instance.gpus and not instance.cpu_only:
            raise FieldProblem(
                "gpus",
                "empty: the engine would run on the CPU; pin its GPUs, or set cpuOnly: true "
                "if the CPU is meant",
            )
        if instance.admin_key_file is not None and self.name != "tabbyapi":
            raise FieldProblem("adminKeyFile", f"only TabbyAPI has an admin key, not {self.name}")
        if instance.engine_source is not None and self.name != "tabbyapi":
            raise FieldProblem("engineSource", f"only read for TabbyAPI, not {self.name}")
        self.validate_settings(instance)

    def validate_settings(self, instance: Instance) -> None:
        for key in instance.settings:
            if key.lstrip("-") in self.owned:
                raise FieldProblem(f"settings.{key}", "set by the launcher; remove it")

    # ---- the fit: split rule and KV formula -------------------------------------------

    def tensor_parallel(self, instance: Instance) -> bool:
        """Every layer split evenly across ranks (else a layer split by free memory)."""
        del instance
        return False

    def kv_tokens(self, instance: Instance) -> int:
        """The tokens the engine allocates KV cache for, for the configured context."""
        return instance.context_length or 0

    def model_problems(self, instance: Instance, static: bool) -> tuple[list[str], list[str]]:
        """(fatal, notes) about the model against this engine build, read before start."""
        del instance, static
        return [], []

    # ---- starting ---------------------------------------------------------------------

    def version_flag(self, instance: Instance) -> str | None:
        """The flag whose output tells which flags this build has (None: never asked)."""
        del instance
        return None

    def spec(
        self,
        instance: Instance,
        fit: Fit,
        environ: dict[str, str],
        reveal: bool,
        features: Features | None,
    ) -> LaunchSpec:
        raise NotImplementedError

    def refusal(self, lines: list[str]) -> str | None:
        """The engine's own error line, when its start-up output says it refused its input."""
        if any(word.lower() in line.lower() for line in lines for word in self.transient):
            return None
        for line in lines:
            if any(pattern in line for pattern in self.refusals):
                return line.strip()[:300]
        return None

    # ---- shared pieces ------------------------------------------------------------------

    def home_env(self, instance: Instance, environ: dict[str, str]) -> tuple[dict[str, str], Path]:
        """HOME and XDG_CACHE_HOME in the state directory (a DynamicUser's / is read-only)."""
        home = work_dir(instance, environ)
        return {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}, home


def pinning(gpus: list[Gpu], cpu_only: bool = False) -> dict[str, str]:
    """Pin the child to exactly these GPUs: by UUID where known, else by PCI-ordered index.

    CPU only: every GPU hidden, so nothing is offloaded by a default.
    """
    if cpu_only:
        return {"CUDA_VISIBLE_DEVICES": "-1", "HIP_VISIBLE_DEVICES": "-1"}
    if not gpus:
        return {}
    if gpus[0].vendor == "nvidia":
        ids = ",".join(g.uuid or str(g.index) for g in gpus)
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ids}
    # ROCR selects physical devices; HIP then numbers what is left from 0.
    ids = ",".join(g.uuid or str(g.index) for g in gpus)
    return {
        "ROCR_VISIBLE_DEVICES": ids,
        "HIP_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus))),
    }


def base_env(instance: Instance) -> dict[str, str]:
    env = pinning(instance.gpus, instance.cpu_only)
    if instance.hsa_override_gfx_version:
        env["HSA_OVERRIDE_GFX_VERSION"] = instance.hsa_override_gfx_version
    return env


def probe_host(instance: Instance) -> str:
    host = instance.listen_address
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - probing a wildcard bind on loopback
        host = "127.0.0.1"
    return host


def url(instance: Instance, path: str) -> str:
    host = probe_host(instance)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{instance.port}{path}"


def work_dir(instance: Instance, environ: dict[str, str]) -> Path:
    """Where generated files go: `workDir`, else systemd's `$STATE_DIRECTORY`."""
    if instance.work_dir:
        return Path(instance.work_dir)
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path(f"/tmp/hydra-launch-{instance.name}")  # noqa: S108


def read_secret(path: Path | None, key: str, reveal: bool) -> str | None:
    """A key file's secret (core's one reader), or a placeholder when planning."""
    if path is None:
        return None
    if not reveal:
        return f"<secret from {path}>"
    return secrets.read_secret(path, "config", key)


def read_key(instance: Instance, environ: dict[str, str], reveal: bool) -> str | None:
    return read_secret(instance.api_key_path(environ), "apiKeyFile", reveal)


def padded(tokens: int, step: int = CONTEXT_STEP) -> int:
    return math.ceil(tokens / step) * step


def flag_args(settings: dict[str, object]) -> list[str]:
    """Extra engine flags from `settings`: {"flag": value} -> --flag value; true -> --flag."""
    args: list[str] = []
    for key, value in settings.items():
        flag = key if key.startswith("-") else f"--{key}"
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        else:
            args += [flag, str(value)]
    return args


__all__ = [
    "Engine",
    "Features",
    "LaunchSpec",
    "Probe",
    "base_env",
    "flag_args",
    "padded",
    "pinning",
    "url",
]
