"""The external commands and paths the deploy uses, each overridable by `HYDRA_DEPLOY_<NAME>`.

Tests point them at stand-ins; the overrides travel into the host's transient units with
`--setenv`, so both sides of a deploy use the same ones.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping

ENV_PREFIX = "HYDRA_DEPLOY_"


@dataclasses.dataclass(frozen=True)
class Tools:
    nix: str = "nix"
    nix_env: str = "nix-env"
    ssh: str = "ssh"
    sudo: str = "sudo"
    systemd_run: str = "systemd-run"
    systemctl: str = "systemctl"
    journalctl: str = "journalctl"
    profile: str = "/nix/var/nix/profiles/system"
    current: str = "/run/current-system"
    state_dir: str = "/var/lib/hydra-deploy"
    # how the host runs `hydra-deploy` (shell words); empty: chosen by the operator's side
    host_command: str = ""
    # PATH of the host's transient units (systemd's default has no NixOS profile in it)
    host_path: str = "/run/wrappers/bin:/run/current-system/sw/bin"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tools:
        env = os.environ if env is None else env
        values = {
            f.name: env[ENV_PREFIX + f.name.upper()]
            for f in dataclasses.fields(cls)
            if env.get(ENV_PREFIX + f.name.upper())
        }
        return cls(**values)

    def env_vars(self) -> dict[str, str]:
        """The overrides in effect, as environment variables for a transient unit."""
        default = Tools()
        return {
            ENV_PREFIX + f.name.upper(): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    def setenv_args(self) -> list[str]:
        """`systemd-run` arguments: the host's PATH, then the overrides in effect."""
        pairs = [("PATH", self.host_path), *sorted(self.env_vars().items())]
        return [f"--setenv={k}={v}" for k, v in pairs]


@dataclasses.dataclass(frozen=True)
class Where:
    """Runs a command on the host: over ssh with `target`, else here; `sudo` for root's steps."""

    tools: Tools
    target: str | None = None
    sudo: bool = False

    @property
    def name(self) -> str:
        if self.target:
            return self.target.rpartition("@")[2]
        import socket  # noqa: PLC0415

        return socket.gethostname()

    def argv(self, argv: list[str], *, privileged: bool = False) -> list[str]:
        if privileged and self.sudo:
            argv = [self.tools.sudo, *argv]
        if self.target:
            return [self.tools.ssh, self.target, "--", shlex.join(argv)]
        return argv

    def shell(self, script: str) -> list[str]:
        """A small POSIX shell script run on the host (no privileges)."""
        if self.target:
            return [self.tools.ssh, self.target, "--", script]
        return ["sh", "-c", script]
