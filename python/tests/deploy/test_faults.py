"""Faults of the operator's side, its connection and the host's unit: the host always ends on
a system that passed its gate (or the recorded one), with the boot default pointing at it."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest

from tests.deploy.conftest import FakeHost

REMOTE = ("--target-host", "root@gpu1")


def start(host: FakeHost, gate: str, *extra: str) -> subprocess.Popen[str]:
    return host.start("switch", "--flake", "/f#gpu1", *REMOTE, "--gate-timeout", gate, *extra)


def gating(host: FakeHost) -> None:
    host.wait_for(lambda: "failing: llm" in host.journal(), why="the gate to be failing")


def result(host: FakeHost) -> dict[str, object]:
    host.wait_for(host.results, why="the host's result")
    host.wait_for(host.settled, why="the host's units to finish")
    return host.results()[-1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_deployer_the_host_commits_by_itself(fake_host: FakeHost, sig: int) -> None:
    fake_host.healthy(False)
    proc = start(fake_host, "30")
    gating(fake_host)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=10)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
        assert "no longer following; gpu1 finishes the deploy by itself" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    fake_host.healthy(True)
    done = result(fake_host)
    assert done["exitCode"] == 0
    assert fake_host.running() == fake_host.new
    assert fake_host.boot_default() == fake_host.new


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_deployer_the_host_rolls_back_by_itself(fake_host: FakeHost, sig: int) -> None:
    fake_host.healthy(False)
    proc = start(fake_host, "3")
    gating(fake_host)
    proc.send_signal(sig)
    proc.wait(timeout=10)
    done = result(fake_host)
    assert done["exitCode"] == 2
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old
    assert fake_host.profile() == "system-1-link"


def test_host_unit_killed_mid_gate_the_dead_man_timer_reactivates(fake_host: FakeHost) -> None:
    fake_host.healthy(False)
    proc = start(fake_host, "4", "--activation-timeout", "2", "--deadman-margin", "1")
    gating(fake_host)
    deploy = next(
        u
        for n, u in fake_host.units().items()
        if re.fullmatch(r"hydra-deploy-[0-9-a-f]+\.service", n)
    )
    subprocess.run(
        [fake_host.env["HYDRA_DEPLOY_SYSTEMCTL"], "kill", "--signal=KILL"]
        + [n for n in fake_host.units() if re.fullmatch(r"hydra-deploy-[0-9-a-f]+\.service", n)],
        env=fake_host.env,
        check=True,
    )
    del deploy
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old
    assert "dead-man" in output
    assert "the dead-man timer fired" in output.splitlines()[-1]
    assert fake_host.calls("stc-") == ["stc-new test", "stc-old test"]


@pytest.mark.parametrize(("heals", "code"), [(False, 2), (True, 0)])
def test_dropped_connection_the_host_decides_by_itself(
    fake_host: FakeHost, heals: bool, code: int
) -> None:
    fake_host.healthy(False)
    proc = start(fake_host, "5")
    gating(fake_host)
    fake_host.drop_connection()
    if heals:
        fake_host.healthy(True)
    done = result(fake_host)  # while the operator cannot reach the host
    assert done["exitCode"] == code
    assert proc.poll() is None  # still waiting for the host to answer
    want = fake_host.new if heals else fake_host.old
    assert fake_host.running() == want
    assert fake_host.boot_default() == want
    fake_host.restore_connection()
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == code, output
    assert "lost the connection to gpu1" in output
    assert "gpu1 answers again" in output
    assert output.splitlines()[-1].endswith(str(done["summary"]))


def test_closed_stdout_and_stderr_change_nothing(fake_host: FakeHost) -> None:
    proc = fake_host.start(
        "switch", "--flake", "/f#gpu1", *REMOTE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    assert fake_host.results()[-1]["exitCode"] == 0
    assert fake_host.running() == fake_host.new
    assert fake_host.boot_default() == fake_host.new


def test_a_second_deploy_is_refused_naming_the_first(fake_host: FakeHost) -> None:
    fake_host.healthy(False)
    first = start(fake_host, "30")
    gating(fake_host)
    code, output = fake_host.deploy("switch", "--flake", "/f#gpu1", *REMOTE)
    assert code == 6, output
    (holder,) = [r for r in fake_host.results() if r["phase"] == "refused"]
    summary = output.splitlines()[-1]
    assert re.search(r"refused: deploy \d{8}-\d{6}-[0-9a-f]{4} by .+ \(pid \d+\)", summary), summary
    assert str(first.pid) in summary
    assert "nothing changed" in summary
    del holder
    fake_host.healthy(True)
    output, _ = first.communicate(timeout=60)
    assert first.returncode == 0, output
    assert fake_host.calls("stc-") == ["stc-new test", "stc-new boot"]
    assert json.dumps(fake_host.results())


def test_a_restart_mid_gate_is_resolved_when_the_operator_reaches_the_host(
    fake_host: FakeHost,
) -> None:
    fake_host.healthy(False)
    proc = start(fake_host, "30")
    gating(fake_host)
    # power loss: the connection, the deploy unit and its timer are gone, and the host boots
    # its boot default, the recorded system
    fake_host.drop_connection()
    units = fake_host.units()
    deploy = [n for n in units if re.fullmatch(r"hydra-deploy-[0-9-a-f]+\.service", n)]
    timers = [n for n in units if n.endswith(".timer")]
    systemctl = fake_host.env["HYDRA_DEPLOY_SYSTEMCTL"]
    subprocess.run([systemctl, "stop", *timers], env=fake_host.env, check=True)
    (fake_host.root / "run/current-system").unlink()
    (fake_host.root / "run/current-system").symlink_to(fake_host.old)
    subprocess.run([systemctl, "kill", "--signal=KILL", *deploy], env=fake_host.env, check=True)
    before = fake_host.calls("stc-")
    fake_host.restore_connection()

    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "ended without a result" in output
    assert "the host restarted or its deploy process died" in output.splitlines()[-1]
    assert fake_host.calls("stc-") == before  # it already runs the recorded system
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old
    # the lock is free again
    fake_host.healthy(True)
    code, output = fake_host.deploy("switch", "--flake", "/f#gpu1", *REMOTE)
    assert code == 0, output
