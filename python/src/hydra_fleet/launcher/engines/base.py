"""What every engine provides: the child's argv, environment, files, and readiness probe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hydra_fleet.launcher.config import Gpu, Instance
from hydra_fleet.launcher.fit import Fit

ProbeKind = Literal["http", "tcp", "ollama"]


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
    probe: Probe
    cwd: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # written before start; may hold keys
    secret_env: tuple[str, ...] = ()  # env keys whose values are secrets (hidden in plans)
    secret_files: tuple[str, ...] = ()


def pinning(gpus: list[Gpu]) -> dict[str, str]:
    """Pin the child to exactly these GPUs: by UUID where known, else by PCI-ordered index."""
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
    env = pinning(instance.gpus)
    if instance.hsa_override_gfx_version:
        env["HSA_OVERRIDE_GFX_VERSION"] = instance.hsa_override_gfx_version
    return env


def url(instance: Instance, path: str) -> str:
    host = instance.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - probing a wildcard bind on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{instance.port}{path}"


def work_dir(instance: Instance, environ: dict[str, str]) -> Path:
    """Where generated files go: `workDir`, else systemd's `$STATE_DIRECTORY`."""
    if instance.work_dir:
        return Path(instance.work_dir)
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path(f"/tmp/hydra-launch-{instance.name}")  # noqa: S108


def read_key(instance: Instance, environ: dict[str, str], reveal: bool) -> str | None:
    """The API key (first line of the file), or a placeholder when planning."""
    path = instance.api_key_path(environ)
    if path is None:
        return None
    if not reveal:
        return f"<secret from {path}>"
    from hydra_fleet.core.errors import ConfigError  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as err:
        raise ConfigError("config", "apiKeyFile", f"cannot read {path}: {err.strerror}") from err
    if not text or not text[0].strip():
        raise ConfigError("config", "apiKeyFile", f"{path} is empty")
    return text[0].strip()


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


__all__ = ["Fit", "LaunchSpec", "Probe", "base_env", "flag_args", "pinning", "url"]
