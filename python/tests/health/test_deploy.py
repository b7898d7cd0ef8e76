"""The switch sequencing with stand-in commands that record their calls."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hydra_fleet.health.cli import main
from hydra_fleet.health.deploy import Tools, transient_argv
from tests.health.conftest import write_script

NEW = "/nix/store/new-system"
OLD = "/nix/store/old-system"


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Stand-ins for nix, nix-env, readlink, ssh, systemd-run, hydra-health and both systems'
    switch-to-configuration; each appends its argv to one log. Exit codes from files."""
    log = tmp_path / "calls.log"
    codes = tmp_path / "codes"
    codes.mkdir()
    root = tmp_path / "root"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def tool(name: str, body: str = "") -> Path:
        return write_script(
            bin_dir / name,
            f'echo "{name} $*" >> {log}\n{body}\n'
            f'[ -f {codes}/{name} ] && exit "$(cat {codes}/{name})"\nexit 0\n',
        )

    tools = {
        "nix": tool("nix", f'[ "$1" = build ] && echo {root}{NEW}'),
        "nix_env": tool("nix-env"),
        "readlink": tool("readlink", f"echo {root}{OLD}"),
        "ssh": tool("ssh", 'shift 2; sh -c "$*"; exit $?'),
        "systemd_run": tool("systemd-run"),
        "sudo": tool("sudo"),
        "health": tool(
            "hydra-health",
            f"if [ -f {codes}/silent ]; then :; "
            f'elif [ -f {codes}/hydra-health ]; then echo \'{{"ok": false, "passed": ["gpu"], '
            f'"failed": {{"llm": "HTTP 503 (0/3 passes in a row)"}}}}\'; '
            f'else echo \'{{"ok": true, "passed": ["gpu", "llm"], "failed": {{}}}}\'; fi',
        ),
    }
    for system, name in ((NEW, "stc-new"), (OLD, "stc-old")):
        target = root / system.lstrip("/") / "bin"
        target.mkdir(parents=True)
        write_script(
            target / "switch-to-configuration",
            f'echo "{name} $*" >> {log}\n'
            f'[ -f {codes}/{name} ] && exit "$(cat {codes}/{name})"\nexit 0\n',
        )
    for key, path in tools.items():
        monkeypatch.setenv("HYDRA_DEPLOY_" + key.upper(), str(path))
    monkeypatch.setenv("HYDRA_DEPLOY_PROFILE", "/nix/var/nix/profiles/system")
    monkeypatch.setenv("HYDRA_DEPLOY_UNIT", "hydra-deploy-test")  # as if inside the unit
    return {"log": log, "codes": codes, "root": root}


def calls(env: dict[str, Path], prefix: str = "") -> list[str]:
    bin_dir = f"{env['log'].parent}/bin/"
    lines = env["log"].read_text().replace(bin_dir, "").splitlines()
    return [line for line in lines if line.startswith(prefix)]


def fail(env: dict[str, Path], name: str, code: int) -> None:
    (env["codes"] / name).write_text(str(code))


def test_switch_success_order(stand_ins: dict[str, Path]) -> None:
    root = stand_ins["root"]
    code = main(["deploy", "switch", "--flake", "/src/hydra#hydra-ai", "--gate-timeout", "30"])
    assert code == 0
    assert calls(stand_ins) == [
        "nix build --no-link --print-out-paths "
        "/src/hydra#nixosConfigurations.hydra-ai.config.system.build.toplevel",
        "readlink -f /run/current-system",
        "stc-new test",
        "hydra-health gate --config /etc/hydra-health/config.json --allow-missing "
        "--timeout 30 --json",
        f"nix-env -p /nix/var/nix/profiles/system --set {root}{NEW}",
        "stc-new boot",
    ]


def test_gate_failure_reactivates_the_recorded_system_and_names_checks(
    stand_ins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fail(stand_ins, "hydra-health", 1)
    code = main(["deploy", "switch", "--flake", "/src/hydra#hydra-ai", "--show-trace"])
    assert code == 1
    assert calls(stand_ins) == [
        "nix build --no-link --print-out-paths "
        "/src/hydra#nixosConfigurations.hydra-ai.config.system.build.toplevel --show-trace",
        "readlink -f /run/current-system",
        "stc-new test",
        "hydra-health gate --config /etc/hydra-health/config.json --allow-missing "
        "--timeout 300 --json",
        "stc-old test",
    ]
    err = capsys.readouterr().err
    assert "health gate failed: llm: HTTP 503" in err
    assert "re-activated" in err
    assert "boot default is unchanged" in err


def test_host_without_the_agent_is_not_gated(stand_ins: dict[str, Path]) -> None:
    fail(stand_ins, "hydra-health", 127)
    (stand_ins["codes"] / "silent").touch()
    assert main(["deploy", "switch", "--flake", "/f#h"]) == 0
    assert calls(stand_ins)[-1] == "stc-new boot"


def test_failed_units_on_activation_roll_back_without_gating(stand_ins: dict[str, Path]) -> None:
    fail(stand_ins, "stc-new", 4)
    assert main(["deploy", "switch", "--flake", "/f#h"]) == 1
    assert [c.split()[0] for c in calls(stand_ins)] == ["nix", "readlink", "stc-new", "stc-old"]


def test_build_failure_touches_nothing(
    stand_ins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fail(stand_ins, "nix", 1)
    assert main(["deploy", "switch", "--flake", "/f#h"]) == 1
    assert [c.split()[0] for c in calls(stand_ins)] == ["nix"]
    assert "build of /f#h failed" in capsys.readouterr().err


def test_target_host_runs_remote_steps_over_ssh(stand_ins: dict[str, Path]) -> None:
    root = stand_ins["root"]
    # the ssh stand-in runs the "remote" command here, like a host that shares our store
    code = main(["deploy", "switch", "--flake", "/f#h", "--target-host", "root@gpu1"])
    assert code == 0
    assert calls(stand_ins, "nix ") == [
        "nix build --no-link --print-out-paths "
        "/f#nixosConfigurations.h.config.system.build.toplevel",
        f"nix copy --to ssh://root@gpu1 {root}{NEW}",
    ]
    got = calls(stand_ins, "ssh ")
    assert got[0] == "ssh root@gpu1 -- readlink -f /run/current-system"
    assert got[1].startswith("ssh root@gpu1 -- systemd-run --unit=hydra-deploy-activate-")
    assert got[1].endswith(f"--service-type=exec -- {root}{NEW}/bin/switch-to-configuration test")
    assert got[2].startswith("ssh root@gpu1 -- hydra-health gate")
    assert got[3] == f"ssh root@gpu1 -- nix-env -p /nix/var/nix/profiles/system --set {root}{NEW}"
    assert got[4].endswith("/bin/switch-to-configuration boot")
    assert len(got) == 5


def test_local_rollback_activates_in_its_own_unit(
    stand_ins: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_DEPLOY_UNIT")
    monkeypatch.setattr("hydra_fleet.health.deploy.in_transient_unit", lambda: False)
    assert main(["deploy", "rollback"]) == 0
    got = [line.removeprefix("sudo ") for line in calls(stand_ins)]  # sudo when not root
    assert got[0] == "nix-env -p /nix/var/nix/profiles/system --rollback"
    activation = next(line for line in got if line.startswith("systemd-run"))
    assert "--wait" in activation
    assert activation.endswith("-- /nix/var/nix/profiles/system/bin/switch-to-configuration switch")


def test_rollback_goes_back_one_generation(stand_ins: dict[str, Path]) -> None:
    assert main(["deploy", "rollback", "--target-host", "gpu1"]) == 0
    got = calls(stand_ins, "ssh ")
    assert got[0] == "ssh gpu1 -- nix-env -p /nix/var/nix/profiles/system --rollback"
    assert got[1].endswith("-- /nix/var/nix/profiles/system/bin/switch-to-configuration switch")


def test_switch_moves_activation_into_a_transient_unit(
    stand_ins: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HYDRA_DEPLOY_UNIT")
    monkeypatch.setattr("hydra_fleet.health.deploy.in_transient_unit", lambda: False)
    flake = tmp_path / "flake"
    flake.mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", "switch", "--flake", "./flake#h", "--gate-timeout", "60"]) == 0
    got = [line.removeprefix("sudo ") for line in calls(stand_ins)]  # sudo when not root
    assert got[0].startswith(f"nix build --no-link --print-out-paths {flake}#")
    run = got[1].split()
    assert run[0] == "systemd-run"
    assert run[1].startswith("--unit=hydra-deploy-")
    assert {"--wait", "--pipe", "--collect"} <= set(run)
    tail = run[run.index("--") + 1 :]
    assert tail[1:] == [
        "-m",
        "hydra_fleet.health.cli",
        "deploy",
        "activate",
        "--system",
        f"{stand_ins['root']}{NEW}",
        "--gate-timeout",
        "60",
    ]
    assert any(a.startswith("--setenv=HYDRA_DEPLOY_UNIT=hydra-deploy-") for a in run)
    # the stand-in tool paths travel into the unit
    assert os.environ["HYDRA_DEPLOY_NIX_ENV"].endswith("/bin/nix-env")
    assert "--setenv=HYDRA_DEPLOY_NIX_ENV=nix-env" in run  # (calls() strips the bin folder)


def test_tools_from_env_and_back() -> None:
    tools = Tools.from_env({"HYDRA_DEPLOY_NIX": "/x/nix", "HYDRA_DEPLOY_UNRELATED": "y"})
    assert tools.nix == "/x/nix"
    assert tools.env_vars() == {"HYDRA_DEPLOY_NIX": "/x/nix"}
    argv = transient_argv(tools, ["deploy", "activate"])
    assert "--setenv=HYDRA_DEPLOY_NIX=/x/nix" in argv
