"""The operator's side: build, diff, copy, start the host's transient unit, follow it.

After the unit is started nothing here can change the outcome: this side only relays the
unit's journal and reads the result file the host writes. A killed deployer, a closed terminal
or a dropped connection leave the host to finish by itself; when the connection comes back
the outcome is read as if nothing happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import getpass
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from hydra_fleet.deploy.codes import Exit
from hydra_fleet.deploy.host import deadman_unit, deploy_unit
from hydra_fleet.deploy.tools import Tools, Where

POLL = 1.0
LOST_GRACE = 120.0  # beyond the dead-man's deadline, before giving up on an unreachable host
SSH_FAILED = 255
NO_ANSWER = 124  # our own timeout on a poll: a connection that hangs is as good as down


def out(line: str) -> None:
    """Print for the operator. A closed terminal or pipe must not stop the deploy's
    bookkeeping (nor turn its exit status into Python's 120): from then on output goes nowhere."""
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        _silence()


def _silence() -> None:
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, stream.fileno())
        os.close(devnull)


def stage(name: str, text: str) -> None:
    out(f"{name:<10}{text}")


def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


def absolute_flake(ref: str) -> str:
    """A local path flake (`.`) made absolute."""
    if ref and ":" not in ref and (ref.startswith((".", "/")) or Path(ref).exists()):
        return str(Path(ref).resolve())
    return ref or str(Path.cwd())


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """A follower (journalctl, ssh) must not outlive a deployer killed with SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclasses.dataclass
class Follower:
    """Relays the host's journal lines for the deploy's units; restarted after a drop,
    skipping the lines already shown."""

    argv: list[str]
    shown: int = 0
    last: str = ""
    proc: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None

    def ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.thread is not None:
            self.thread.join(timeout=1)
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks
            )
        except OSError:
            self.proc = None
            return
        skip = self.shown
        proc = self.proc

        def relay() -> None:
            seen = 0
            assert proc.stdout is not None
            for raw in proc.stdout:
                seen += 1
                if seen <= skip:
                    continue
                self.shown += 1
                self.last = raw.rstrip("\n")
                out(self.last)

        self.thread = threading.Thread(target=relay, daemon=True)
        self.thread.start()

    def stop(self, drain: float = 1.5) -> None:
        if self.proc is None:
            return
        deadline = time.monotonic() + drain
        if self.thread is not None:
            while self.thread.is_alive() and time.monotonic() < deadline:
                self.thread.join(timeout=0.1)
                if self.proc.poll() is not None:
                    break
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Operator:
    def __init__(self, tools: Tools, target: str | None, sudo: bool) -> None:
        self.tools = tools
        self.where = Where(tools, target, sudo or (target is None and os.geteuid() != 0))
        self.host = self.where.name
        self.target = target

    # small steps ----------------------------------------------------------------------

    def _capture(self, argv: list[str], timeout: float = 120) -> tuple[int, str, str]:
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found"
        except subprocess.TimeoutExpired:
            return 124, "", f"{argv[0]}: no answer within {timeout:g} s"
        return done.returncode, done.stdout, done.stderr

    def build(self, flake: str, show_trace: bool) -> str | None:
        ref, _, host = flake.partition("#")
        attr = f"{absolute_flake(ref)}#nixosConfigurations.{host}.config.system.build.toplevel"
        argv = [self.tools.nix, "build", "--no-link", "--print-out-paths", attr]
        if show_trace:
            argv.append("--show-trace")
        stage("build", f"{flake}")
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
        except FileNotFoundError:
            stage("error", f"{self.tools.nix}: command not found")
            return None
        paths = [w for w in done.stdout.split() if w.startswith("/")]
        if done.returncode != 0 or not paths:
            why = f"nix build exited {done.returncode}" if done.returncode else "no store path"
            stage("error", f"the build of {flake} failed ({why}); nothing on {host} changed")
            return None
        stage("build", paths[-1])
        return paths[-1]

    def running_system(self) -> str | None:
        script = f"readlink -f {shlex.quote(self.tools.current)}"
        code, stdout, stderr = self._capture(self.where.shell(script), timeout=60)
        if code != 0 or not stdout.strip():
            stage("error", f"cannot read the running system of {self.host}: {stderr.strip()}")
            return None
        return stdout.strip()

    def diff(self, old: str, new: str, *, on_host: bool) -> bool:
        argv = [self.tools.nix, "store", "diff-closures", old, new]
        code, stdout, _ = self._capture(self.where.argv(argv) if on_host else argv)
        if code != 0:
            return False
        where = f"on {self.host}" if on_host else "here"
        stage("diff", f"{old} -> {new} ({where})")
        lines = stdout.splitlines() or ["(no package changes)"]
        for line in lines:
            out(f"          {line}")
        return True

    def copy(self, paths: list[str]) -> bool:
        assert self.target is not None
        stage("copy", f"{' '.join(paths)} -> {self.target}")
        argv = [self.tools.nix, "copy", "--to", f"ssh://{self.target}", *paths]
        code, _, stderr = self._capture(argv, timeout=3600)
        if code != 0:
            stage(
                "error", f"copying to {self.target} failed (exit {code}): {stderr.strip()[-300:]}"
            )
            return False
        return True

    def host_command(self, system: str) -> tuple[list[str], str | None]:
        """How the host runs hydra-deploy, and the store path to copy for it (if any)."""
        if self.tools.host_command:
            return shlex.split(self.tools.host_command), None
        script = Path(sys.argv[0]).resolve()
        parts = script.parts
        if len(parts) > 4 and parts[1:3] == ("nix", "store"):
            package = str(Path(*parts[:4]))
            return [f"{package}/bin/hydra-deploy"], package
        return [f"{system}/sw/bin/hydra-deploy"], None

    # the host's unit ------------------------------------------------------------------

    def start(self, unit: str, description: str, command: list[str], args: list[str]) -> bool:
        """`systemd-run` on the host: `command` (how the host runs hydra-deploy) with `args`."""
        tools = dataclasses.replace(self.tools, host_command=shlex.join(command))
        argv = [
            self.tools.systemd_run,
            f"--unit={unit}",
            f"--description={description}",
            "--service-type=exec",
            "--collect",
            "--quiet",
            *tools.setenv_args(),
            "--",
            *command,
            *args,
        ]
        code, _, stderr = self._capture(self.where.argv(argv, privileged=True), timeout=120)
        if code != 0:
            stage("error", f"cannot start {unit} on {self.host} (exit {code}): {stderr.strip()}")
            return False
        return True

    def follow(
        self,
        deploy_id: str,
        units: list[str],
        patience: float,
        recover: tuple[str, list[str], list[str]] | None = None,
    ) -> int:
        """Relay the journal until the host's result for `deploy_id` appears. Ctrl-C or
        SIGTERM only stop the following (exit 130); the host goes on."""
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return self._follow(deploy_id, units, patience, recover)
        except KeyboardInterrupt:
            stage(
                "stopped",
                f"no longer following; {self.host} finishes the deploy by itself: "
                f"`journalctl -u {units[0]}` there",
            )
            return Exit.INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _follow(
        self,
        deploy_id: str,
        units: list[str],
        patience: float,
        recover: tuple[str, list[str], list[str]] | None,
    ) -> int:
        journal = [self.tools.journalctl]
        for unit in units:
            journal += ["-u", f"{unit}.service"]
        journal += ["-f", "-o", "cat", "-n", "all"]
        follower = Follower(self.where.argv(journal, privileged=self.target is not None))
        result_file = f"{self.tools.state_dir}/results/{deploy_id}.json"
        states = " ".join(
            shlex.quote(u)
            for u in (*(f"{u}.service" for u in units), *(f"{u}.timer" for u in units[1:]))
        )
        script = (
            f"cat {shlex.quote(result_file)} 2>/dev/null || "
            f"{shlex.quote(self.tools.systemctl)} is-active {states}"
        )
        started = time.monotonic()
        unreachable_since: float | None = None
        idle_polls = 0
        try:
            while True:
                follower.ensure()
                code, stdout, _ = self._capture(self.where.shell(script), timeout=20)
                text = stdout.strip()
                down = bool(self.target) and code in (SSH_FAILED, NO_ANSWER)
                if not down and unreachable_since is not None:
                    stage("waiting", f"{self.host} answers again")
                    unreachable_since = None
                if code == 0 and text.startswith("{"):
                    return self._finish(follower, text)
                if down:
                    if unreachable_since is None:
                        unreachable_since = time.monotonic()
                        stage(
                            "waiting",
                            f"lost the connection to {self.host}; the host commits or rolls "
                            "back by itself; retrying",
                        )
                    if time.monotonic() - started > patience:
                        stage(
                            "lost",
                            f"{self.host} unreachable since "
                            f"{time.monotonic() - unreachable_since:.0f} s; it has decided by "
                            f"itself: see `journalctl -u {units[0]}` there",
                        )
                        return Exit.LOST
                else:
                    active = [s for s in text.split() if s in ("active", "activating")]
                    idle_polls = 0 if active else idle_polls + 1
                    if idle_polls >= 3 and recover is not None:
                        # gone without a result (a reboot, a crash): the host resolves what the
                        # deploy recorded against what it runs now, and writes the result
                        stage("recover", f"the deploy on {self.host} ended without a result")
                        if not self.start(
                            recover[0], "hydra-deploy: recover", recover[1], recover[2]
                        ):
                            return Exit.LOST
                        recover, idle_polls = None, 0
                    elif idle_polls >= 3:
                        stage(
                            "lost",
                            f"the deploy on {self.host} ended without a result: see "
                            f"`journalctl -u {units[0]}` there",
                        )
                        return Exit.LOST
                time.sleep(POLL)
        finally:
            follower.stop(drain=0)

    def _finish(self, follower: Follower, text: str) -> int:
        try:
            result = json.loads(text)
        except ValueError:
            stage("lost", f"unreadable result from {self.host}")
            return Exit.LOST
        summary = str(result.get("summary", ""))
        follower.stop()
        if summary and not follower.last.endswith(summary):
            out(summary)
        code = result.get("exitCode")
        return int(code) if isinstance(code, int) else Exit.LOST

    # commands -------------------------------------------------------------------------

    def switch(
        self,
        flake: str,
        *,
        show_trace: bool,
        gate_timeout: float | None,
        activation_timeout: float,
        margin: float,
        ignore_failed_units: bool,
    ) -> int:
        new = self.build(flake, show_trace)
        if new is None:
            return Exit.BUILD_FAILED
        old = self.running_system()
        if old is None:
            return Exit.NOT_STARTED
        diffed = (not self.target or Path(old).exists()) and self.diff(old, new, on_host=False)
        command, package = self.host_command(new)
        if self.target:
            if not self.copy([new] + ([package] if package else [])):
                return Exit.NOT_STARTED
            if not diffed:
                diffed = self.diff(old, new, on_host=True)
        if not diffed:
            stage("diff", f"{old} -> {new}: no closure difference available")
        deploy_id = new_id()
        args = [
            "host",
            "switch",
            "--id",
            deploy_id,
            "--system",
            new,
            "--holder",
            holder(),
            "--activation-timeout",
            f"{activation_timeout:g}",
            "--margin",
            f"{margin:g}",
        ]
        if gate_timeout is not None:
            args += ["--gate-timeout", f"{gate_timeout:g}"]
        if ignore_failed_units:
            args.append("--ignore-failed-units")
        unit = deploy_unit(deploy_id)
        stage("activate", f"on {self.host} in {unit}.service (it goes on if this command stops)")
        if not self.start(unit, f"hydra-deploy {deploy_id}: switch to {new}", command, args):
            return Exit.NOT_STARTED
        patience = activation_timeout + (gate_timeout or 900.0) + margin + LOST_GRACE
        recover = f"{unit}-recover"
        return self.follow(
            deploy_id,
            [unit, deadman_unit(deploy_id), recover],
            patience,
            (recover, command, ["host", "recover", "--id", deploy_id]),
        )

    def rollback(self) -> int:
        command, package = self.host_command("/run/current-system")
        if self.target and package and not self.copy([package]):
            return Exit.NOT_STARTED
        deploy_id = new_id()
        unit = deploy_unit(deploy_id)
        args = ["host", "rollback", "--id", deploy_id, "--holder", holder()]
        stage("rollback", f"on {self.host} in {unit}.service")
        if not self.start(unit, f"hydra-deploy {deploy_id}: rollback", command, args):
            return Exit.NOT_STARTED
        return self.follow(deploy_id, [unit], 600.0 + LOST_GRACE)
