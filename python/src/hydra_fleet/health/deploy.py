"""The health-gated switch, and rollback.

`switch`: build the system as the calling user, then (as root, in a transient unit so the
switch being judged cannot kill its judge) record the running system, activate the new one
with `switch-to-configuration test`, run the gate, and on success make the new system the
boot default (`nix-env -p <profile> --set` + `switch-to-configuration boot`); on failure
re-activate the recorded system and exit 1 naming the failed checks. With `--target-host`
the build is local, the closure is copied with `nix copy`, and every remote step runs over
ssh; the remote `switch-to-configuration` runs in its own transient unit on that host.

Every external command is taken from the environment (`HYDRA_DEPLOY_NIX`, ...), so tests
use stand-in executables that record their calls.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra_fleet.core.errors import HydraError
from hydra_fleet.core.log import get_logger

log = get_logger("hydra.health.deploy")

UNIT_ENV = "HYDRA_DEPLOY_UNIT"
GATE_CONFIG = "/etc/hydra-health/config.json"
EXIT_UNITS_FAILED = 4  # switch-to-configuration: some units failed to (re)start
EXIT_NOT_FOUND = 127  # the shell (ssh) found no such command


class DeployError(HydraError):
    """The deployment failed (and was rolled back where it got that far)."""


@dataclasses.dataclass(frozen=True)
class Tools:
    nix: str = "nix"
    nix_env: str = "nix-env"
    readlink: str = "readlink"
    ssh: str = "ssh"
    systemd_run: str = "systemd-run"
    sudo: str = "sudo"
    health: str = "hydra-health"
    profile: str = "/nix/var/nix/profiles/system"
    current: str = "/run/current-system"
    gate_config: str = GATE_CONFIG

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Tools:
        env = dict(os.environ if env is None else env)
        values = {}
        for f in dataclasses.fields(cls):
            key = "HYDRA_DEPLOY_" + f.name.upper()
            if env.get(key):
                values[f.name] = env[key]
        return cls(**values)

    def env_vars(self) -> dict[str, str]:
        """The overrides, to pass into the transient unit."""
        default = Tools()
        return {
            "HYDRA_DEPLOY_" + f.name.upper(): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


@dataclasses.dataclass
class Deployer:
    tools: Tools
    target_host: str | None = None
    sudo: bool = False  # prefix privileged steps with sudo (remote non-root user)

    def _wrap(self, argv: list[str], privileged: bool) -> list[str]:
        if privileged and self.sudo:
            argv = [self.tools.sudo, *argv]
        if self.target_host:
            return [self.tools.ssh, self.target_host, "--", shlex.join(argv)]
        return argv

    def run(
        self,
        argv: list[str],
        *,
        privileged: bool = False,
        capture: bool = False,
        local: bool = False,
    ) -> tuple[int, str]:
        full = argv if local else self._wrap(argv, privileged)
        log.info("run", argv=shlex.join(full))
        proc = subprocess.run(
            full, stdout=subprocess.PIPE if capture else None, text=True, check=False
        )
        return proc.returncode, proc.stdout or ""

    def must(
        self,
        argv: list[str],
        *,
        privileged: bool = False,
        capture: bool = False,
        local: bool = False,
    ) -> str:
        code, out = self.run(argv, privileged=privileged, capture=capture, local=local)
        if code != 0:
            raise DeployError(f"{shlex.join(argv)} exited {code}")
        return out

    # steps ------------------------------------------------------------------------------

    def build(self, flake: str, show_trace: bool) -> str:
        ref, _, host = flake.partition("#")
        if not host:
            raise DeployError(f"--flake {flake!r}: expected FLAKE#HOST")
        attr = f"{absolute_flake(ref)}#nixosConfigurations.{host}.config.system.build.toplevel"
        argv = [self.tools.nix, "build", "--no-link", "--print-out-paths", attr]
        if show_trace:
            argv.append("--show-trace")
        log.info("building", flake=flake)
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise DeployError(f"build of {flake} failed (nix build exited {proc.returncode})")
        lines = [line for line in proc.stdout.split() if line.startswith("/")]
        if not lines:
            raise DeployError("nix build printed no store path")
        path = lines[-1]
        if self.target_host:
            self.must(
                [self.tools.nix, "copy", "--to", f"ssh://{self.target_host}", path], local=True
            )
        return path

    def current_system(self) -> str:
        out = self.must([self.tools.readlink, "-f", self.tools.current], capture=True).strip()
        if not out:
            raise DeployError(f"cannot read {self.tools.current}")
        return out

    def activate(self, system: str, action: str) -> int:
        argv = [f"{system}/bin/switch-to-configuration", action]
        if self.target_host or not in_transient_unit():
            # The ssh session (or the unit we run in) may die with the switch; the
            # activation must not: it gets a transient unit of its own, as nixos-rebuild does.
            argv = [
                self.tools.systemd_run,
                f"--unit=hydra-deploy-activate-{int(time.time())}",
                "--wait",
                "--pipe",
                "--collect",
                "--quiet",
                "--service-type=exec",
                "--",
                *argv,
            ]
        code, _ = self.run(argv, privileged=True)
        return code

    def gate(self, timeout: float) -> tuple[bool, dict[str, str]]:
        argv = [
            self.tools.health,
            "gate",
            "--config",
            self.tools.gate_config,
            "--allow-missing",
            "--timeout",
            f"{timeout:g}",
            "--json",
        ]
        code, out = self.run(argv, capture=True)
        if code == EXIT_NOT_FOUND and not out.strip():
            # no hydra-health on the host: it runs no agent, so there is nothing to gate
            log.warning("hydra-health not found on the host; no health gate", host=self.target_host)
            return True, {}
        try:
            report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except json.JSONDecodeError:
            report = {}
        failed = report.get("failed") if isinstance(report, dict) else None
        if not isinstance(failed, dict):
            failed = {} if code == 0 else {"gate": f"hydra-health gate exited {code}"}
        return code == 0 and not failed, {str(k): str(v) for k, v in failed.items()}

    def make_default(self, system: str) -> None:
        self.must([self.tools.nix_env, "-p", self.tools.profile, "--set", system], privileged=True)
        code = self.activate(system, "boot")
        if code != 0:
            raise DeployError(f"switch-to-configuration boot exited {code}")

    # sequences --------------------------------------------------------------------------

    def activate_and_gate(
        self, new: str, gate_timeout: float, *, ignore_failed_units: bool = False
    ) -> int:
        old = self.current_system()
        log.info("recorded running system", system=old, new=new)
        code = self.activate(new, "test")
        problem: str | None = None
        if code == EXIT_UNITS_FAILED and not ignore_failed_units:
            problem = "switch-to-configuration test: some units failed to start (exit 4)"
        elif code not in (0, EXIT_UNITS_FAILED):
            problem = f"switch-to-configuration test exited {code}"
        if problem is None:
            ok, failed = self.gate(gate_timeout)
            if ok:
                self.make_default(new)
                log.info("deployed", system=new)
                print(f"hydra-health: deployed {new}", file=sys.stderr)
                return 0
            problem = "health gate failed: " + "; ".join(f"{n}: {d}" for n, d in failed.items())
        log.error("deploy failed, re-activating the recorded system", reason=problem, old=old)
        back = self.activate(old, "test")
        where = f"re-activated {old}" if back == 0 else f"re-activating {old} FAILED ({back})"
        raise DeployError(f"{problem}; {where}; the boot default is unchanged")

    def rollback(self) -> int:
        self.must([self.tools.nix_env, "-p", self.tools.profile, "--rollback"], privileged=True)
        code = self.activate(self.tools.profile, "switch")
        if code not in (0, EXIT_UNITS_FAILED):
            raise DeployError(f"switch-to-configuration switch exited {code}")
        print("hydra-health: rolled back to the previous generation", file=sys.stderr)
        return 0


def absolute_flake(ref: str) -> str:
    """A local path flake (`.`) made absolute, so it means the same inside a transient unit."""
    if ref and (ref.startswith((".", "/")) or Path(ref).exists()) and ":" not in ref:
        return str(Path(ref).resolve())
    return ref or str(Path.cwd())


def in_transient_unit() -> bool:
    if os.environ.get(UNIT_ENV):
        return True
    try:
        cgroup = Path("/proc/self/cgroup").read_text(encoding="utf-8")
    except OSError:
        return False
    return "/hydra-deploy-" in cgroup


def transient_argv(tools: Tools, args: Sequence[str]) -> list[str]:
    """`systemd-run` re-running `hydra-health deploy activate …` as its own unit."""
    unit = f"hydra-deploy-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = [tools.systemd_run]
    if os.geteuid() != 0:
        argv = [tools.sudo, *argv]
    argv += [
        f"--unit={unit}",
        "--wait",
        "--pipe",
        "--collect",
        "--quiet",
        "--service-type=exec",
        f"--setenv={UNIT_ENV}={unit}",
        f"--setenv=PATH={os.environ.get('PATH', '/run/current-system/sw/bin')}",
        # the interpreter alone may not know where hydra_fleet is (Nix wraps the script)
        f"--setenv=PYTHONPATH={os.pathsep.join(p for p in sys.path if p)}",
    ]
    argv += [f"--setenv={k}={v}" for k, v in sorted(tools.env_vars().items())]
    argv += ["--", sys.executable, "-m", "hydra_fleet.health.cli", *args]
    return argv
