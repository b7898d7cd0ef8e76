"""`hydra-deploy switch` end to end against the fake host: outcomes, exit codes, output."""

from __future__ import annotations

import json

from tests.deploy.conftest import FakeHost

REMOTE = ("--target-host", "root@gpu1")


def switch(host: FakeHost, *extra: str, gate: str = "20") -> tuple[int, str]:
    return host.deploy(
        "switch", "--flake", "/src/hydra#gpu1", *REMOTE, "--gate-timeout", gate, *extra
    )


def test_a_healthy_system_is_committed_and_becomes_the_boot_default(fake_host: FakeHost) -> None:
    code, output = switch(fake_host)
    assert code == 0, output
    assert fake_host.running() == fake_host.new
    assert fake_host.boot_default() == fake_host.new
    assert fake_host.profile() == "system-2-link"
    # the stages, in order, each once
    stages = [line.split()[0] for line in output.splitlines() if line and not line.startswith(" ")]
    for name in ("build", "diff", "copy", "activate", "record", "dead-man", "gate", "committed"):
        assert name in stages, output
    order = [stages.index(n) for n in ("build", "diff", "copy", "activate", "gate", "committed")]
    assert order == sorted(order), output
    assert "hello: 1.0 → 2.0" in output  # the closure difference
    assert "deployed" in output.splitlines()[-1]
    # the host ran the activation, not the operator: no --pipe, no --wait
    started = fake_host.calls("systemd-run --unit=hydra-deploy-")
    assert started
    assert not any("--pipe" in c or "--wait" in c for c in fake_host.calls("systemd-run"))
    # systemd's environment has no NixOS profile on PATH: the unit gets the host's
    assert all("--setenv=PATH=" in c for c in fake_host.calls("systemd-run"))
    assert fake_host.calls("stc-") == ["stc-new test", "stc-new boot"]
    # the dead-man timer was armed before the activation and disarmed by the commit
    timers = {n: u for n, u in fake_host.units().items() if n.endswith("-deadman.timer")}
    assert len(timers) == 1
    assert next(iter(timers.values()))["state"] == "inactive"
    fake_host.wait_for(fake_host.settled, why="the host's units to finish")
    assert not any(n.endswith("-deadman.service") for n in fake_host.units())


def test_gate_failure_reactivates_the_recorded_system_and_lists_the_checks_once(
    fake_host: FakeHost,
) -> None:
    fake_host.healthy(False)
    code, output = switch(fake_host, gate="3")
    assert code == 2, output
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old
    assert fake_host.profile() == "system-1-link"
    assert fake_host.calls("stc-") == ["stc-new test", "stc-old test"]
    summary = output.splitlines()[-1]
    assert "rolled back to" in summary
    assert "llm: exit 1 (0/2 passes in a row)" in summary
    assert output.count("(0/2 passes in a row)") == 1
    # progress: elapsed/timeout, the failing check's detail
    gate_lines = [line for line in output.splitlines() if line.startswith("gate")]
    assert any("/3 s" in line and "failing: llm: exit 1" in line for line in gate_lines), output


def test_progress_line_on_every_state_change(fake_host: FakeHost) -> None:
    fake_host.healthy(False)
    proc = fake_host.start("switch", "--flake", "/f#gpu1", *REMOTE, "--gate-timeout", "30")
    fake_host.wait_for(lambda: "failing: llm" in fake_host.journal(), why="a failing line")
    fake_host.healthy(True)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    gate_lines = [line for line in output.splitlines() if line.startswith("gate")]
    failing = next(i for i, line in enumerate(gate_lines) if "failing: llm" in line)
    assert any("llm 1/2" in line for line in gate_lines[failing:]), output


def test_build_failure_touches_nothing_on_the_host(fake_host: FakeHost) -> None:
    fake_host.fail("nix-build", 1)
    code, output = switch(fake_host)
    assert code == 5
    assert "the build of /src/hydra#gpu1 failed" in output
    assert fake_host.calls("ssh") == []
    assert fake_host.running() == fake_host.old


def test_activation_failure_rolls_back_without_gating(fake_host: FakeHost) -> None:
    fake_host.fail("stc-new-test", 4)
    code, output = switch(fake_host)
    assert code == 3, output
    assert fake_host.calls("stc-") == ["stc-new test", "stc-old test"]
    assert fake_host.running() == fake_host.old
    assert "some units failed to start (exit 4)" in output.splitlines()[-1]


def test_activation_that_hangs_is_cut_at_its_timeout_and_rolled_back(fake_host: FakeHost) -> None:
    (fake_host.root / "codes/stc-new-test.sleep").write_text("30")
    code, output = switch(fake_host, "--activation-timeout", "2")
    assert code == 3, output
    assert "switch-to-configuration test did not finish in 2 s" in output.splitlines()[-1]
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old


def test_missing_gate_config_fails_closed(fake_host: FakeHost) -> None:
    fake_host.system("new", gate_config=False)
    code, output = switch(fake_host)
    assert code == 2, output
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old
    assert "runs the health agent (hydra-health.service) but has no gate config" in output


def test_unreadable_agent_address_fails_closed(fake_host: FakeHost) -> None:
    new = fake_host.system("new")
    host_json = f"{new}/etc/hydra-deploy/host.json"
    with open(host_json, "w", encoding="utf-8") as out:
        json.dump({"agent": {"unit": "hydra-health.service", "healthz": "127.0.0.1:9446"}}, out)
    code, output = switch(fake_host)
    assert code == 2, output
    summary = output.splitlines()[-1]
    assert "host.json: agent: healthz: expected a URL (http:// or https://)" in summary
    assert fake_host.running() == fake_host.old


def test_agent_missing_on_a_host_that_should_have_one_fails_the_gate(
    fake_host: FakeHost,
) -> None:
    fake_host.system("new", starts_agent=False)
    fake_host.healthz.ok = False
    code, output = switch(fake_host, gate="3")
    assert code == 2, output
    assert fake_host.running() == fake_host.old
    summary = output.splitlines()[-1]
    assert "hydra-health: hydra-health.service is inactive" in summary
    assert "hydra-health /healthz: HTTP 503" in summary


def test_host_without_an_agent_is_gated_on_its_units_and_says_so(fake_host: FakeHost) -> None:
    fake_host.system("new", agent=False)
    code, output = switch(fake_host)
    assert code == 0, output
    assert "no health agent in the new system: gated on activation and every unit active" in output
    assert fake_host.calls("systemctl list-units")
    # ... and a failed unit fails it
    fake_host.system("newer", agent=False)
    (fake_host.root / "build-output").write_text(str(fake_host.root / "store/newer-system"))
    (fake_host.root / "units/broken.service").write_text("failed\n")
    code, output = switch(fake_host, gate="3")
    assert code == 2, output
    assert "units: failed: broken.service" in output.splitlines()[-1]
    assert fake_host.running() == fake_host.new


def test_failing_bootloader_install_restores_the_profile(fake_host: FakeHost) -> None:
    fake_host.fail("stc-new-boot", 1)
    code, output = switch(fake_host)
    assert code == 3, output
    assert fake_host.profile() == "system-1-link"
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old
    summary = output.splitlines()[-1]
    assert "bootloader install failed" in summary
    assert "the profile is back on generation 1" in summary


def test_rollback_failure_says_the_host_needs_a_person(fake_host: FakeHost) -> None:
    fake_host.healthy(False)
    fake_host.fail("stc-old-test", 1)
    code, output = switch(fake_host, gate="2")
    assert code == 4, output
    assert "needs a person" in output.splitlines()[-1]


def test_local_switch_runs_without_ssh(fake_host: FakeHost) -> None:
    code, output = fake_host.deploy("switch", "--flake", "/f#here", "--gate-timeout", "20")
    assert code == 0, output
    assert fake_host.calls("ssh") == []
    assert fake_host.calls("nix copy") == []
    assert fake_host.boot_default() == fake_host.new
    result = fake_host.results()[-1]
    assert result["exitCode"] == 0
    assert json.loads(json.dumps(result))["phase"] == "committed"
