"""A plain command (ComfyUI, a stand-in server): argv as given, pinned like the others.

Ready = GET probePath answers 200 when one is set, else the port accepts connections. The
command keeps its own HOME and working directory (it may be a login user's service).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_fleet.core.config import FieldProblem
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines.base import Engine, Features, LaunchSpec, Probe, base_env, url

if TYPE_CHECKING:
    from hydra_fleet.launcher.fit import Fit


class Command(Engine):
    name = "command"
    executable = ""
    cache_types = {"f16": "f16", "bf16": "bf16", "fp8": "fp8", "q8": "q8", "q6": "q6", "q4": "q4"}  # noqa: RUF012
    needs_model = False
    private_home = False

    def validate(self, instance: Instance) -> None:
        if not instance.command:
            raise FieldProblem("command", "missing; the command engine needs the argv to run")
        if instance.admin_key_file is not None:
            raise FieldProblem("adminKeyFile", "only TabbyAPI has an admin key, not command")
        if instance.engine_source is not None:
            raise FieldProblem("engineSource", "only read for TabbyAPI, not command")

    def spec(
        self,
        instance: Instance,
        fit: Fit,
        environ: dict[str, str],
        reveal: bool,
        features: Features | None,
    ) -> LaunchSpec:
        del fit, environ, reveal, features
        if instance.probe_path is not None:
            probe = Probe("http", url(instance, instance.probe_path))
        else:
            probe = Probe("tcp", f"tcp://{instance.listen_address}:{instance.port}")
        return LaunchSpec(argv=list(instance.command), env=base_env(instance), probe=probe)
