"""Stand-in `systemctl`: the transient units of the systemd-run stand-in, and static units
whose state is the content of `$HYDRA_TEST_ROOT/units/UNIT` (e.g. `hydra-health.service`)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ["HYDRA_TEST_ROOT"])


def transient(unit: str) -> dict[str, Any] | None:
    path = ROOT / "systemd" / f"{unit}.json"
    found: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
    return found


def state_of(unit: str) -> str:
    data = transient(unit)
    if data is not None:
        return str(data.get("state", "inactive"))
    static = ROOT / "units" / unit
    return static.read_text().strip() if static.exists() else "inactive"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(unit: str, sig: int = signal.SIGTERM) -> int:
    data = transient(unit)
    if data is None:
        return 0
    if unit.endswith(".timer"):
        path = ROOT / "systemd" / f"{unit}.json"
        data["state"] = "inactive"
        path.write_text(json.dumps(data))
        return 0
    pid = data.get("pid")
    if data.get("state") == "active" and pid:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return 0
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    return 0


def main() -> int:
    args = sys.argv[1:]
    with (ROOT / "calls.log").open("a") as log:
        log.write("systemctl " + " ".join(args) + "\n")
    verb, rest = args[0], args[1:]
    if verb == "is-active":
        states = [state_of(u) for u in rest]
        print("\n".join(states))
        return 0 if "active" in states else 3
    if verb == "stop":
        return max([stop(u) for u in rest] or [0])
    if verb == "kill":
        sig = signal.SIGTERM
        units = []
        for arg in rest:
            if arg.startswith("--signal="):
                sig = getattr(signal, "SIG" + arg.removeprefix("--signal=").removeprefix("SIG"))
            else:
                units.append(arg)
        for unit in units:
            data = transient(unit) or {}
            if data.get("pid"):
                os.killpg(data["pid"], sig)
        return 0
    if verb == "list-units":
        failed = sorted(
            p.name for p in (ROOT / "units").iterdir() if p.read_text().strip() == "failed"
        )
        for unit in failed:
            print(f"{unit} loaded failed failed {unit}")
        return 0
    print(f"systemctl stand-in: unknown verb {verb}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
