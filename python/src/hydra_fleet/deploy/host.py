"""The host's side of a deploy, run inside its own transient unit (never by the operator).

`switch`: take the host's lock, record the running system and the profile's generation, arm the
dead-man timer, activate the new system with `switch-to-configuration test`, gate, and commit
(profile + `switch-to-configuration boot`, then disarm) or re-activate the recorded system.
`rescue`: what the dead-man timer runs: stop the deploy unit if it still runs, then restore what
the deploy recorded (or finish a commit whose gate had passed). `rollback`: re-activate the
profile's generation when something else runs, else the generation before it.

Every step prints one line to stdout (the unit's journal, which the operator follows).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hydra_fleet.deploy.codes import Exit
from hydra_fleet.deploy.gate import configured_timeout, plan_gate, run_gate
from hydra_fleet.deploy.state import FINAL, Record, State
from hydra_fleet.deploy.tools import Tools

EXIT_UNITS_FAILED = 4  # switch-to-configuration: some units failed to (re)start
RESCUE_LOCK_WAIT = 60.0


def deploy_unit(deploy_id: str) -> str:
    return f"hydra-deploy-{deploy_id}"


def deadman_unit(deploy_id: str) -> str:
    return f"hydra-deploy-{deploy_id}-deadman"


@dataclasses.dataclass(frozen=True)
class SwitchOptions:
    deploy_id: str
    system: str
    holder: str
    gate_timeout: float | None = None
    activation_timeout: float = 600.0
    margin: float = 60.0
    ignore_failed_units: bool = False


def pinned(tools: Tools) -> Tools:
    """The host's commands as absolute store paths, found before anything is activated: a new
    system that breaks PATH (or /run/current-system/sw) cannot break its own rollback."""
    values = {}
    for name in ("nix_env", "systemctl", "systemd_run"):
        found = shutil.which(getattr(tools, name))
        if found:
            values[name] = os.path.realpath(found)
    return dataclasses.replace(tools, **values)


class Host:
    def __init__(self, tools: Tools) -> None:
        self.tools = pinned(tools)
        self.state = State(tools.state_dir)
        self.name = socket.gethostname()
        self.activation_timeout = 600.0

    # output and small helpers ---------------------------------------------------------

    def say(self, stage: str, text: str) -> None:
        with contextlib.suppress(OSError):
            print(f"{stage:<10}{text}", flush=True)

    def host_command(self) -> list[str]:
        if self.tools.host_command:
            return shlex.split(self.tools.host_command)
        script = Path(sys.argv[0])
        return [str(script.resolve())] if script.is_file() else ["hydra-deploy"]

    def running(self) -> str:
        return os.path.realpath(self.tools.current)

    def profile_generation(self) -> tuple[int | None, str]:
        """The system profile's current generation number and the system it points at."""
        try:
            link = os.readlink(self.tools.profile)
        except OSError:
            return None, ""
        match = re.search(r"-(\d+)-link$", link)
        return (int(match.group(1)) if match else None), os.path.realpath(self.tools.profile)

    def generations(self) -> dict[int, str]:
        profile = Path(self.tools.profile)
        found: dict[int, str] = {}
        pattern = re.compile(re.escape(profile.name) + r"-(\d+)-link$")
        with contextlib.suppress(OSError):
            for entry in profile.parent.iterdir():
                match = pattern.match(entry.name)
                if match:
                    found[int(match.group(1))] = os.path.realpath(entry)
        return found

    def run(self, argv: list[str], timeout: float | None = None) -> int:
        """Run a step with its output in the journal; past `timeout` its whole group dies."""
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as err:
            self.say("error", f"cannot run {argv[0]}: {err.strerror}")
            return 127
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return -signal.SIGKILL

    def unit_state(self, unit: str) -> str:
        try:
            done = subprocess.run(
                [self.tools.systemctl, "is-active", unit],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return done.stdout.strip() or "unknown"

    def stc(self, system: str, action: str) -> list[str]:
        return [f"{system}/bin/switch-to-configuration", action]

    # the lock -------------------------------------------------------------------------

    def acquire(self, record: Record) -> str | None:
        """Take the lock; on refusal the reason naming the holder. A deploy whose process is
        gone (a reboot, a crash) without its dead-man timer is first resolved."""
        if not self.state.try_lock():
            holder = self.state.current()
            who = holder.describe_holder() if holder else "another deploy"
            return f"refused: {who} holds this host's deploy lock"
        previous = self.state.current()
        if previous is not None and previous.id != record.id and previous.phase not in FINAL:
            if self.unit_state(f"{deadman_unit(previous.id)}.timer") == "active":
                self.state.unlock()
                return (
                    f"refused: {previous.describe_holder()} is unresolved and its dead-man "
                    "timer is pending"
                )
            self.say("recover", f"{previous.describe_holder()} never finished; restoring it")
            self.resolve(previous, "its deploy process is gone (reboot or crash)")
        return None

    def conclude(self, record: Record, phase: str, code: Exit, summary: str, stage: str) -> int:
        """Record the outcome of a command that arms no timer, say it, and return its code."""
        record.phase = phase
        record.exit_code = code
        record.summary = summary
        self.say(stage, summary)
        self.state.write_result(record)
        return code

    def refuse(self, record: Record, reason: str) -> int:
        summary = f"{self.name}: {reason}; nothing changed"
        return self.conclude(record, "refused", Exit.BUSY, summary, "refused")

    # switch ---------------------------------------------------------------------------

    def switch(self, opts: SwitchOptions) -> int:
        self.activation_timeout = opts.activation_timeout
        record = Record(opts.deploy_id, opts.holder, kind="switch", new=opts.system)
        reason = self.acquire(record)
        if reason is not None:
            return self.refuse(record, reason)
        try:
            return self._switch(record, opts)
        except Exception as err:
            # Whatever breaks here, the host must not stay on a system that did not pass its
            # gate; the dead-man timer would get there too, but only later.
            if record.phase not in ("activating", "gating", "committing"):
                raise
            return self.roll_back(
                record, Exit.ACTIVATION_FAILED, f"internal error: {type(err).__name__}: {err}"
            )
        finally:
            self.state.unlock()

    def _switch(self, record: Record, opts: SwitchOptions) -> int:
        new = Path(opts.system)
        if not (new / "bin/switch-to-configuration").exists():
            return self.not_started(
                record, f"{new} is not a NixOS system (no switch-to-configuration)"
            )
        record.old = self.running()
        record.profile_generation, record.profile_target = self.profile_generation()
        timeout = opts.gate_timeout or configured_timeout(new) or 300.0
        delay = opts.activation_timeout + timeout + opts.margin
        record.deadman_at = time.time() + delay
        record.phase = "arming"
        self.state.save(record)
        self.say(
            "record",
            f"{self.name} runs {record.old}; boot default: generation "
            f"{record.profile_generation} ({record.profile_target})",
        )
        if not self.arm(record, delay):
            self.state.finish(record)
            return self.not_started(record, "cannot arm the dead-man timer; nothing activated")
        self.say("dead-man", f"armed: re-activates {record.old} in {delay:.0f} s unless committed")

        record.phase = "activating"
        self.state.save(record)
        self.say("activate", f"{new}/bin/switch-to-configuration test")
        code = self.run(self.stc(str(new), "test"), timeout=opts.activation_timeout)
        problem = None
        if code == -signal.SIGKILL:
            problem = (
                f"switch-to-configuration test did not finish in {opts.activation_timeout:g} s"
            )
        elif code == EXIT_UNITS_FAILED and not opts.ignore_failed_units:
            problem = "switch-to-configuration test: some units failed to start (exit 4)"
        elif code not in (0, EXIT_UNITS_FAILED):
            problem = f"switch-to-configuration test exited {code}"
        if problem is not None:
            return self.roll_back(record, Exit.ACTIVATION_FAILED, problem)

        record.phase = "gating"
        self.state.save(record)
        plan = plan_gate(new, self.tools.systemctl, timeout)
        self.say("gate", plan.note)
        outcome = asyncio.run(run_gate(plan, lambda text: self.say("gate", text)))
        if not outcome.ok:
            return self.roll_back(record, Exit.GATE_FAILED, "the gate failed", outcome.failed)
        self.say("gate", f"passed in {outcome.elapsed:.0f} s")
        return self.commit(record)

    def not_started(self, record: Record, reason: str) -> int:
        return self.conclude(record, "refused", Exit.NOT_STARTED, f"{self.name}: {reason}", "error")

    def arm(self, record: Record, delay: float) -> bool:
        argv = [
            self.tools.systemd_run,
            f"--unit={deadman_unit(record.id)}",
            f"--description=hydra-deploy {record.id}: dead-man timer (re-activates {record.old})",
            f"--on-active={max(1, round(delay))}s",
            "--timer-property=AccuracySec=1s",
            "--service-type=exec",
            *self.tools.setenv_args(),
            "--",
            *self.host_command(),
            "host",
            "rescue",
            "--id",
            record.id,
            "--activation-timeout",
            f"{self.activation_timeout:g}",
        ]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False)
        return done.returncode == 0

    def disarm(self, record: Record) -> None:
        subprocess.run(
            [self.tools.systemctl, "stop", f"{deadman_unit(record.id)}.timer"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )

    def commit(self, record: Record) -> int:
        record.phase = "committing"
        self.state.save(record)
        self.say("commit", f"system profile -> {record.new}; switch-to-configuration boot")
        code = 0
        if os.path.realpath(self.tools.profile) != record.new:  # (a resumed commit may have)
            code = self.run([self.tools.nix_env, "-p", self.tools.profile, "--set", record.new])
        if code != 0:
            return self.roll_back(
                record, Exit.ACTIVATION_FAILED, f"setting the system profile failed (exit {code})"
            )
        code = self.run(self.stc(record.new, "boot"), timeout=self.activation_timeout)
        if code != 0:
            return self.roll_back(
                record,
                Exit.ACTIVATION_FAILED,
                f"the bootloader install failed (switch-to-configuration boot exited {code})",
            )
        generation, _ = self.profile_generation()
        record.phase = "committed"
        record.exit_code = Exit.DEPLOYED
        record.summary = (
            f"{self.name}: deployed {record.new}: it passed its gate, runs, and is the boot "
            f"default (generation {generation})"
        )
        self.say("committed", record.summary)
        self.state.finish(record)
        self.disarm(record)
        return Exit.DEPLOYED

    def restore_profile(self, record: Record) -> str:
        """Put the profile and the boot default back on the recorded generation if they moved."""
        generation, target = self.profile_generation()
        if record.profile_generation is None or generation == record.profile_generation:
            return ""
        self.say("restore", f"system profile back to generation {record.profile_generation}")
        code = self.run(
            [
                self.tools.nix_env,
                "-p",
                self.tools.profile,
                "--switch-generation",
                str(record.profile_generation),
            ]
        )
        if code != 0:
            return f"; restoring the profile FAILED (exit {code}), it is on generation {generation}"
        self.run(self.stc(record.profile_target, "boot"), timeout=self.activation_timeout)
        del target
        return f"; the profile is back on generation {record.profile_generation}"

    def roll_back(
        self,
        record: Record,
        code: Exit,
        reason: str,
        failed: dict[str, str] | None = None,
        *,
        activate: bool = True,
    ) -> int:
        """Back to the recorded system and profile generation (`activate=False`: the host
        already runs it, as after a reboot, and only the profile may need restoring)."""
        record.phase = "rolling-back"
        record.failed = dict(failed or {})
        self.state.save(record)
        self.say(
            "rollback",
            f"{reason}; " + ("re-activating" if activate else "keeping") + f" {record.old}",
        )
        profile_note = self.restore_profile(record)
        done = 0
        if activate:
            done = self.run(self.stc(record.old, "test"), timeout=self.activation_timeout)
        running = self.running()
        checks = ": " + "; ".join(f"{n}: {d}" for n, d in record.failed.items()) if failed else ""
        boot = f"generation {record.profile_generation}"
        if done in (0, EXIT_UNITS_FAILED) and running == record.old:
            record.phase = "rolled-back"
            record.exit_code = code
            units = " (some of its units failed to start)" if done == EXIT_UNITS_FAILED else ""
            record.summary = (
                f"{self.name}: rolled back to {record.old}{units}: {reason}{checks}"
                f"{profile_note}; boot default: {boot}"
            )
        else:
            record.phase = "rollback-failed"
            record.exit_code = Exit.ROLLBACK_FAILED
            record.summary = (
                f"{self.name}: {reason}{checks}; re-activating {record.old} FAILED (exit {done}), "
                f"the host runs {running} and needs a person{profile_note}; boot default: "
                f"{boot} (a reboot comes back to it)"
            )
        self.say(record.phase, record.summary)
        self.state.finish(record)
        self.disarm(record)
        return record.exit_code

    def resolve(self, record: Record, why: str, *, booted: bool = False) -> int:
        """Restore what a deploy that did not finish recorded (idempotent). `booted`: the host
        restarted since, so it runs its boot default; nothing is re-activated if that is the
        recorded system."""
        if record.kind != "switch":
            record.phase = "rollback-failed"
            record.exit_code = Exit.ROLLBACK_FAILED
            record.summary = f"{self.name}: rollback {record.id} interrupted: {why}"
            self.state.finish(record)
            return Exit.ROLLBACK_FAILED
        if record.phase == "committing" and self.running() == record.new:
            self.say("recover", f"{why}; its gate had passed: finishing the commit")
            return self.commit(record)
        code = Exit.GATE_FAILED if record.phase == "gating" else Exit.ACTIVATION_FAILED
        if booted and self.running() == record.old:
            return self.roll_back(
                record,
                code,
                f"deploy {record.id} did not finish ({record.phase}): {why}",
                activate=False,
            )
        return self.roll_back(
            record, code, f"deploy {record.id} did not finish ({record.phase}): {why}"
        )

    def rescue(self, deploy_id: str) -> int:
        subprocess.run(
            [self.tools.systemctl, "stop", f"{deploy_unit(deploy_id)}.service"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if not self.state.lock(RESCUE_LOCK_WAIT):
            self.say("dead-man", f"the deploy lock is still held after {RESCUE_LOCK_WAIT:g} s")
            return Exit.ROLLBACK_FAILED
        try:
            record = self.state.current()
            if record is None or record.id != deploy_id or record.phase in FINAL:
                self.say("dead-man", f"deploy {deploy_id} is already resolved; nothing to do")
                return 0
            self.say("dead-man", f"deploy {deploy_id} did not finish in time ({record.phase})")
            return self.resolve(record, "the dead-man timer fired")
        finally:
            self.state.unlock()

    def recover(self, deploy_id: str | None = None) -> int:
        """A deploy whose unit and dead-man timer are gone without a result (a restart, a
        crash) is resolved against what the host runs now, and its result written; started by
        the operator's side when it finds that."""
        if not self.state.try_lock():
            self.say("recover", "a deploy holds the lock; nothing to recover")
            return 0
        try:
            record = self.state.current()
            if record is None or record.phase in FINAL or deploy_id not in (None, record.id):
                self.say("recover", f"no unfinished deploy {deploy_id or ''} on {self.name}")
                return 0
            if self.unit_state(f"{deadman_unit(record.id)}.timer") == "active":
                self.say("recover", f"{record.describe_holder()}: its dead-man timer is pending")
                return 0
            self.say("recover", f"{record.describe_holder()} was cut short (restart or crash)")
            return self.resolve(
                record, "the host restarted or its deploy process died", booted=True
            )
        finally:
            self.state.unlock()

    # rollback -------------------------------------------------------------------------

    def rollback(self, deploy_id: str, holder: str) -> int:
        record = Record(deploy_id, holder, kind="rollback")
        reason = self.acquire(record)
        if reason is not None:
            return self.refuse(record, reason)
        try:
            return self._rollback(record)
        finally:
            self.state.unlock()

    def _rollback(self, record: Record) -> int:
        running = self.running()
        generation, target = self.profile_generation()
        record.old = running
        if generation is None:
            return self._rollback_failed(record, f"cannot read the profile {self.tools.profile}")
        goal, system = generation, target
        if running != target:
            why = f"it runs {running}, which is not the profile's generation {generation}"
        else:
            older = [n for n in self.generations() if n < generation]
            if not older:
                return self._rollback_failed(record, f"no generation before {generation}")
            goal = max(older)
            system = self.generations()[goal]
            why = f"it runs the profile's generation {generation}; going to the one before"
            code = self.run(
                [self.tools.nix_env, "-p", self.tools.profile, "--switch-generation", str(goal)]
            )
            if code != 0:
                return self._rollback_failed(record, f"nix-env --switch-generation exited {code}")
        record.new = system
        self.say("rollback", f"{self.name}: {why}: re-activating generation {goal} ({system})")
        code = self.run(self.stc(system, "switch"), timeout=self.activation_timeout)
        if code not in (0, EXIT_UNITS_FAILED):
            if goal != generation:
                self.run(
                    [
                        self.tools.nix_env,
                        "-p",
                        self.tools.profile,
                        "--switch-generation",
                        str(generation),
                    ]
                )
            return self._rollback_failed(
                record, f"switch-to-configuration switch of generation {goal} exited {code}"
            )
        units = " (some of its units failed to start)" if code == EXIT_UNITS_FAILED else ""
        summary = (
            f"{self.name}: rolled back to generation {goal} ({system}){units}: it runs and is "
            "the boot default"
        )
        return self.conclude(record, "committed", Exit.DEPLOYED, summary, "done")

    def _rollback_failed(self, record: Record, reason: str) -> int:
        summary = f"{self.name}: rollback failed: {reason}; the host runs {self.running()}"
        return self.conclude(record, "rollback-failed", Exit.ROLLBACK_FAILED, summary, "error")
