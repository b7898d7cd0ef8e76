"""Stand-in `systemd-run`: starts the command as a "unit" that outlives its caller.

The caller returns as soon as the unit is registered, as systemd-run without --wait does; the
command runs under a manager process that double-forked into its own session (like PID 1, it
is nobody's child), so killing the caller, its ssh or its terminal changes nothing. The unit's
output goes to `$HYDRA_TEST_ROOT/journal.log` ("UNIT<TAB>line"), its state to
`systemd/UNIT.json`. `--on-active=Ns` registers `UNIT.timer` and runs `UNIT.service` after N s
unless the timer was stopped (`systemctl stop UNIT.timer`). The environment is systemd's: only
PATH and the test's own variables, plus every `--setenv`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ["HYDRA_TEST_ROOT"])
UNITS = ROOT / "systemd"
KEEP = ("PATH", "PYTHONPATH", "HYDRA_TEST_ROOT", "LANG", "TMPDIR")


def write(unit: str, **fields: Any) -> None:
    path = UNITS / f"{unit}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read(unit: str) -> dict[str, Any]:
    path = UNITS / f"{unit}.json"
    found: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return found


def journal(unit: str, line: str) -> None:
    with (ROOT / "journal.log").open("a") as out:
        out.write(f"{unit}\t{line}\n")


def main() -> int:  # noqa: PLR0912 - one branch per option, as systemd-run has them
    args = sys.argv[1:]
    with (ROOT / "calls.log").open("a") as log:
        log.write("systemd-run " + " ".join(args) + "\n")
    split = args.index("--")
    options, command = args[:split], args[split + 1 :]
    unit, delay, env = None, None, {k: os.environ[k] for k in KEEP if k in os.environ}
    for option in options:
        if option.startswith("--unit="):
            unit = option.removeprefix("--unit=")
        elif option.startswith("--on-active="):
            delay = float(option.removeprefix("--on-active=").removesuffix("s"))
        elif option.startswith("--setenv="):
            key, _, value = option.removeprefix("--setenv=").partition("=")
            env[key] = value
    UNITS.mkdir(parents=True, exist_ok=True)
    service = f"{unit}.service"
    if read(service).get("state") in ("active", "activating"):
        print(
            f"Failed to start transient service unit: Unit {service} was already loaded",
            file=sys.stderr,
        )
        return 1
    ready_r, ready_w = os.pipe()
    if os.fork():
        os.close(ready_w)
        os.read(ready_r, 1)  # the unit is registered
        return 0
    os.close(ready_r)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        if delay is not None:
            timer = f"{unit}.timer"
            write(timer, state="active", pid=os.getpid())
            os.write(ready_w, b"x")
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if read(timer).get("state") != "active":
                    os._exit(0)
                time.sleep(0.05)
            write(timer, state="inactive")
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            text=True,
        )
        write(service, state="active", pid=proc.pid, started=time.time())
        if delay is None:
            os.write(ready_w, b"x")
        assert proc.stdout is not None
        for line in proc.stdout:
            journal(service, line.rstrip("\n"))
        code = proc.wait()
        write(service, state="inactive" if code == 0 else "failed", exitStatus=code)
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
