"""A fake host for `hydra-deploy`: stand-in commands, systems, a profile, a real healthz.

Everything the deploy runs comes from `HYDRA_DEPLOY_*`: stand-ins for nix, nix-env, ssh, sudo,
systemd-run, systemctl and journalctl (`standins/`), and per system a `switch-to-configuration`
that records its call and, like the real one, points `run/current-system` at its system (test,
switch) or the boot default at the profile's generation (boot, switch). The systemd-run stand-in
runs each unit under a manager that is nobody's child, so the host's side outlives whatever
happens to the operator's. The ssh stand-in runs the "remote" command here, through `sh -c`,
and refuses (exit 255) while `ssh-down` exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.installed import command_argv

STANDINS = Path(__file__).parent / "standins"
QUICK_CHECK = {"interval": 0.5, "timeout": 0.5, "connectTimeout": 0.2}


def executable(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


class Healthz:
    """The health agent's /healthz: a real HTTP server on loopback, 200 or 503 on demand."""

    def __init__(self) -> None:
        self.ok = True
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = 200 if owner.ok and self.path == "/healthz" else 503
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"no")

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class FakeHost:
    root: Path
    healthz: Healthz
    env: dict[str, str]
    procs: list[subprocess.Popen[str]] = dataclasses.field(default_factory=list)

    # the host's state -----------------------------------------------------------------

    @property
    def old(self) -> str:
        return str(self.root / "store/old-system")

    @property
    def new(self) -> str:
        return str(self.root / "store/new-system")

    def system(
        self,
        name: str,
        *,
        agent: bool = True,
        gate_config: bool = True,
        starts_agent: bool = True,
        passes: int = 2,
        gate_timeout: float = 30,
    ) -> str:
        """A system in the store with its switch-to-configuration; with `agent`, it enables
        the health agent (its unit file, etc/hydra-deploy/host.json) and, with `gate_config`,
        has a gate config whose one check passes while `healthy` exists."""
        system = self.root / "store" / f"{name}-system"
        (system / "bin").mkdir(parents=True, exist_ok=True)
        etc = system / "etc"
        (etc / "systemd/system").mkdir(parents=True, exist_ok=True)
        (etc / "hydra-deploy").mkdir(parents=True, exist_ok=True)
        activate = ""
        if agent:
            (etc / "systemd/system/hydra-health.service").write_text("[Service]\n")
            host: dict[str, object] = {
                "agent": {"unit": "hydra-health.service", "healthz": self.healthz.url}
            }
            state = "active" if starts_agent else "inactive"
            activate = f"echo {state} > {self.root}/units/hydra-health.service"
        else:
            host = {"agent": None}
            activate = f"rm -f {self.root}/units/hydra-health.service"
        (etc / "hydra-deploy/host.json").write_text(json.dumps(host))
        (etc / "hydra-health/config.json").unlink(missing_ok=True)
        if agent and gate_config:
            (etc / "hydra-health").mkdir(exist_ok=True)
            config = {
                "systemctl": self.env["HYDRA_DEPLOY_SYSTEMCTL"],
                "checks": {
                    "llm": {
                        "type": "command",
                        "command": ["/bin/sh", "-c", f"test -e {self.root}/healthy"],
                        **QUICK_CHECK,
                    }
                },
                "gate": {"passes": passes, "timeout": gate_timeout},
            }
            (etc / "hydra-health/config.json").write_text(json.dumps(config))
        r = self.root
        executable(
            system / "bin/switch-to-configuration",
            f"""#!/bin/sh
echo "stc-{name} $*" >> {r}/calls.log
action="$1"
[ -f {r}/codes/stc-{name}-$action.sleep ] && sleep "$(cat {r}/codes/stc-{name}-$action.sleep)"
code=0
[ -f {r}/codes/stc-{name}-$action ] && code=$(cat {r}/codes/stc-{name}-$action)
echo "{name}: switch-to-configuration $action"
if [ "$action" = test ] || [ "$action" = switch ]; then
  if [ "$code" = 0 ] || [ "$code" = 4 ]; then
    ln -sfn {system} {r}/run/next && mv -T {r}/run/next {r}/run/current-system
    {activate}
  fi
fi
if [ "$action" = boot ] || [ "$action" = switch ]; then
  [ "$code" = 0 ] && readlink -f {r}/profiles/system > {r}/boot-default
fi
exit "$code"
""",
        )
        return str(system)

    def fail(self, name: str, code: int | None) -> None:
        path = self.root / "codes" / name
        if code is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(str(code))

    def healthy(self, yes: bool) -> None:
        flag = self.root / "healthy"
        if yes:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def running(self) -> str:
        return os.path.realpath(self.root / "run/current-system")

    def boot_default(self) -> str:
        return (self.root / "boot-default").read_text().strip()

    def profile(self) -> str:
        return os.readlink(self.root / "profiles/system")

    def calls(self, prefix: str = "") -> list[str]:
        path = self.root / "calls.log"
        lines = path.read_text().splitlines() if path.exists() else []
        lines = [line.removeprefix("sudo ") for line in lines if not line.startswith("sudo")]
        return [line for line in lines if line.startswith(prefix)]

    def units(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in (self.root / "systemd").glob("*.json"):
            found[path.stem] = json.loads(path.read_text())
        return found

    def results(self) -> list[dict[str, Any]]:
        folder = self.root / "state/results"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def journal(self) -> str:
        path = self.root / "journal.log"
        return path.read_text() if path.exists() else ""

    # the operator ---------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [*command_argv("hydra-deploy"), *args]

    def start(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.STDOUT)
        proc = subprocess.Popen(
            self.argv(*args), env=self.env, text=True, stdin=subprocess.DEVNULL, **popen
        )
        self.procs.append(proc)
        return proc

    def deploy(self, *args: str, timeout: float = 90) -> tuple[int, str]:
        proc = self.start(*args)
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output

    def wait_for(self, what: Callable[[], object], timeout: float = 60, why: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {why or what}\n{self.journal()}")
            time.sleep(0.1)

    def settled(self) -> bool:
        """Every unit, timer and dead-man of the host's side has finished."""
        return all(u.get("state") != "active" for u in self.units().values())

    def drop_connection(self) -> None:
        """ssh refuses from now on, and every ssh session running now dies."""
        (self.root / "ssh-down").touch()
        pids = self.root / "ssh-pids"
        for line in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.kill(int(line), signal.SIGKILL)

    def restore_connection(self) -> None:
        (self.root / "ssh-down").unlink(missing_ok=True)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for unit in self.units().values():
            pid = unit.get("pid")
            if unit.get("state") == "active" and pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        for path in (self.root / "systemd").glob("*.timer.json"):
            path.write_text(json.dumps({"state": "inactive"}))


@pytest.fixture
def fake_host(tmp_path: Path) -> Iterator[FakeHost]:
    root = tmp_path
    for folder in ("bin", "codes", "units", "systemd", "store", "run", "profiles", "state"):
        (root / folder).mkdir()
    py = sys.executable
    bin_dir = root / "bin"
    tools: dict[str, Path] = {}
    for name, script in (
        ("systemd_run", "systemd_run.py"),
        ("systemctl", "systemctl.py"),
        ("journalctl", "journalctl.py"),
        ("nix_env", "nix_env.py"),
    ):
        tools[name] = executable(
            bin_dir / name.replace("_", "-"),
            f'#!/bin/sh\nexec {shlex.quote(py)} {shlex.quote(str(STANDINS / script))} "$@"\n',
        )
    tools["sudo"] = executable(
        bin_dir / "sudo", f'#!/bin/sh\necho "sudo $*" >> {root}/calls.log\nexec "$@"\n'
    )
    tools["ssh"] = executable(
        bin_dir / "ssh",
        f"""#!/bin/sh
echo "ssh $*" >> {root}/calls.log
if [ -e {root}/ssh-down ]; then
  echo "ssh: connect to host $1 port 22: Connection refused" >&2
  exit 255
fi
echo $$ >> {root}/ssh-pids
shift
[ "$1" = "--" ] && shift
exec sh -c "$*"
""",
    )
    tools["nix"] = executable(
        bin_dir / "nix",
        f"""#!/bin/sh
echo "nix $*" >> {root}/calls.log
[ -f {root}/codes/nix-$1 ] && exit "$(cat {root}/codes/nix-$1)"
case "$1" in
  build) cat {root}/build-output ;;
  store) echo "hello: 1.0 → 2.0, +12.3 KiB" ;;
esac
exit 0
""",
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HYDRA_TEST_ROOT": str(root),
        "HYDRA_DEPLOY_PROFILE": str(root / "profiles/system"),
        "HYDRA_DEPLOY_CURRENT": str(root / "run/current-system"),
        "HYDRA_DEPLOY_STATE_DIR": str(root / "state"),
        "HYDRA_DEPLOY_HOST_PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HYDRA_DEPLOY_HOST_COMMAND": shlex.join(command_argv("hydra-deploy")),
        **{"HYDRA_DEPLOY_" + k.upper(): str(v) for k, v in tools.items()},
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    healthz = Healthz()
    host = FakeHost(root, healthz, env)
    old = host.system("old")
    host.system("new")
    (root / "profiles/system-1-link").symlink_to(old)
    (root / "profiles/system").symlink_to("system-1-link")
    (root / "run/current-system").symlink_to(old)
    (root / "boot-default").write_text(old + "\n")
    (root / "units/hydra-health.service").write_text("active\n")
    (root / "build-output").write_text(host.new + "\n")
    host.healthy(True)
    try:
        yield host
    finally:
        host.cleanup()
        healthz.close()
