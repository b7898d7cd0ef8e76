"""The three hosts, evaluated: units, ordering, GPU access, firewall, unfree, linger, plans.

Runs the shared `nixos-eval` tool (nixpkgs' option stand-ins, no nixpkgs needed) on this flake
once, then checks per host what the operator relies on. Needs `NIXPKGS_LIB` (nixpkgs' `lib`
folder), `nix-instantiate`, and the tool: `$NIXOS_EVAL`, or `shared/tools/nixos-eval/run` beside
the repository (as in CI) or beside the main checkout of a git worktree. Skips without them.
The launcher part runs the real `hydra-launch check` and `plan --json` on every generated
instance config.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.core.config import load
from hydra_fleet.exporter.config import ExporterConfig
from hydra_fleet.health.config import load_config
from tests.fleet.nixos_eval import REPO, run_tool

GIB = 1024**3


@dataclass(frozen=True)
class Expect:
    """What the operator's notes say a host runs."""

    vendor: str
    gpu_indices: tuple[int, ...]
    tcp_ports: frozenset[int]
    # instance name -> GPU indices it may open
    instances: dict[str, tuple[int, ...]]
    # unit -> units it must be ordered after
    after: dict[str, set[str]] = field(default_factory=dict)
    gateway: bool = False


def unit(instance: str) -> str:
    return f"hydra-inference-{instance}"


HOSTS: dict[str, Expect] = {
    "hydra-ai": Expect(
        vendor="nvidia",
        gpu_indices=(0, 1),
        # SSH, TabbyAPI for LAN clients, exporter and agent for hydra-storage's Prometheus.
        tcp_ports=frozenset({22, 5000, 9445, 9446}),
        instances={"tabbyapi": (0, 1)},
    ),
    "hydra-compute": Expect(
        vendor="nvidia",
        gpu_indices=(0, 1),
        tcp_ports=frozenset({22, 8188, 9445, 9446, 11434}),
        instances={"ollama": (0, 1), "comfyui": (1,)},
        after={unit("comfyui"): {unit("ollama")}},
    ),
    "l": Expect(
        vendor="amd",
        gpu_indices=(0, 1),
        # Gateway, status page, Prometheus; engines and Grafana stay on loopback.
        tcp_ports=frozenset({22, 4000, 8080, 9090, 9445, 9446}),
        instances={"ollama": (0,), "llama-mi50": (0,), "llama-w7500": (1,)},
        after={
            "hydra-inference-gateway": {
                unit("ollama"),
                unit("llama-mi50"),
                unit("llama-w7500"),
            }
        },
        gateway=True,
    ),
}

ALL_INSTANCES = [(name, i) for name, e in sorted(HOSTS.items()) for i in sorted(e.instances)]

# The driver and the CUDA closure of every CUDA layout nixpkgs has had (cuda_cccl, then cccl;
# cuda_crt and libnvvm from CUDA 13; libnvptxcompiler in the newer cuda_nvcc layout).
CUDA_AND_DRIVER = (
    "nvidia-x11",
    "cuda_cudart",
    "cuda_nvcc",
    "cuda_cccl",
    "cccl",
    "cuda_crt",
    "libnvvm",
    "libnvptxcompiler",
    "cudnn",
    "libcublas",
)
NEVER_UNFREE = ("hello", "steam")


def host(report: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = report["hosts"][name]["result"]
    return result


def exec_config(report: dict[str, Any], name: str, unit_name: str) -> dict[str, Any]:
    # The unit's own config (the files it references, e.g. a siblings file, are reported too).
    configs = [
        c
        for c in host(report, name)["execConfigs"].get(unit_name, [])
        if c["name"] == f"{unit_name}.json"
    ]
    assert len(configs) == 1, f"{name}: {unit_name} should have one generated config: {configs}"
    value: dict[str, Any] = configs[0]["value"]
    return value


def test_everything_evaluates_without_error_or_failed_assertion(report: dict[str, Any]) -> None:
    assert report["failures"] == [], report["_output"]
    assert report["ok"] is True, report["_output"]
    assert report["_returncode"] == 0, report["_output"]
    assert set(report["names"]["hosts"]) == set(HOSTS)
    for name in ("default", "gpu-exporter", "inference", "health-agent"):
        assert name in report["names"]["modules"], f"nixosModules.{name} is missing"


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_hydra_units_exist_with_their_exec_start(report: dict[str, Any], name: str) -> None:
    services = host(report, name)["services"]
    expect = HOSTS[name]
    wanted = {
        "hydra-gpu-exporter": "/bin/hydra-gpu-exporter",
        "hydra-health": "/bin/hydra-health",
    } | {unit(i): "/bin/hydra-launch" for i in expect.instances}
    for unit_name, binary in wanted.items():
        assert unit_name in services, f"{name}: no {unit_name}.service"
        exec_start = services[unit_name]["serviceConfig"]["ExecStart"]
        assert binary in exec_start, f"{name}: {unit_name} runs {exec_start!r}"
        assert "--config /nix/store/" in exec_start, exec_start
        assert "multi-user.target" in services[unit_name]["wantedBy"]
    hydra_units = {u for u in services if u.startswith("hydra-inference-")}
    expected_units = {unit(i) for i in expect.instances} | (
        {"hydra-inference-gateway"} if expect.gateway else set()
    )
    assert hydra_units == expected_units
    if expect.gateway:
        assert services["hydra-inference-gateway"]["serviceConfig"]["ExecStart"]


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_units_start_in_the_intended_order(report: dict[str, Any], name: str) -> None:
    services = host(report, name)["services"]
    for unit_name, before in HOSTS[name].after.items():
        after = set(services[unit_name]["after"])
        missing = {f"{b}.service" for b in before} - after
        assert not missing, f"{name}: {unit_name} is not ordered after {missing}"


def nvidia_nodes(device_allow: list[str]) -> set[int]:
    return {
        int(m.group(1))
        for entry in device_allow
        if (m := re.match(r"/dev/nvidia(\d+)\b", entry)) is not None
    }


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_each_unit_may_open_only_its_own_gpus(report: dict[str, Any], name: str) -> None:
    expect = HOSTS[name]
    services = host(report, name)["services"]
    for instance, gpus in expect.instances.items():
        config = services[unit(instance)]["serviceConfig"]
        allow = config.get("DeviceAllow", [])
        assert config.get("DevicePolicy") == "closed", f"{name}: {instance} DevicePolicy"
        if expect.vendor == "nvidia":
            assert nvidia_nodes(allow) == set(gpus), f"{name}: {instance} DeviceAllow {allow}"
            assert not any("kfd" in entry for entry in allow)
        else:
            # Render nodes are numbered by probe order: the card is chosen by the launcher's
            # HIP/ROCR_VISIBLE_DEVICES (checked with the plan below), never /dev/nvidia*.
            assert nvidia_nodes(allow) == set(), f"{name}: {instance} DeviceAllow {allow}"
            assert any("/dev/kfd" in entry for entry in allow), allow
        launcher_gpus = [gpu["index"] for gpu in exec_config(report, name, unit(instance))["gpus"]]
        assert launcher_gpus == list(gpus), f"{name}: {instance} pinned to {launcher_gpus}"
    exporter = services["hydra-gpu-exporter"]["serviceConfig"].get("DeviceAllow", [])
    if expect.vendor == "nvidia":
        assert nvidia_nodes(exporter) == set(expect.gpu_indices)
    else:
        assert nvidia_nodes(exporter) == set()


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_gpu_units_start_after_the_device_nodes_and_get_only_what_they_use(
    report: dict[str, Any], name: str
) -> None:
    """Exact device paths are safe only once the nodes exist: every unit given one is ordered
    after the unit that waits for them. Engines get unified memory, the exporter does not,
    nothing gets the profiler node, and the exporter keeps no capability."""
    services = host(report, name)["services"]
    assert "hydra-gpu-devices" in services, f"{name}: no unit waits for the GPU nodes"
    for unit_name, service in services.items():
        if not unit_name.startswith("hydra-"):
            continue
        allow = service["serviceConfig"].get("DeviceAllow", [])
        assert not any("nvidia-uvm-tools" in entry for entry in allow), f"{unit_name}: {allow}"
        if any(entry.startswith("/dev/") for entry in allow):
            assert "hydra-gpu-devices.service" in service["after"], unit_name
            assert "hydra-gpu-devices.service" in service["wants"], unit_name
        if unit_name != "hydra-gpu-devices":
            assert int(service["serviceConfig"]["LimitNOFILE"]) >= 65536, unit_name
    exporter = services["hydra-gpu-exporter"]["serviceConfig"]
    assert exporter.get("CapabilityBoundingSet") == [""], exporter.get("CapabilityBoundingSet")
    assert not exporter.get("AmbientCapabilities", [""])[0], exporter.get("AmbientCapabilities")
    exporter_allow = exporter.get("DeviceAllow", [])
    assert not any("nvidia-uvm" in entry or "kfd" in entry for entry in exporter_allow)
    for instance in HOSTS[name].instances:
        allow = services[unit(instance)]["serviceConfig"]["DeviceAllow"]
        if HOSTS[name].vendor == "nvidia":
            assert "/dev/nvidia-uvm rw" in allow, f"{name}: {instance} {allow}"
            assert "/dev/nvidiactl rw" in allow, f"{name}: {instance} {allow}"
    for other in ("hydra-health", "hydra-inference-gateway"):
        if other in services:
            assert not services[other]["serviceConfig"].get("DeviceAllow"), other
            assert "hydra-gpu-devices.service" not in services[other]["after"], other


@pytest.mark.parametrize(
    ("name", "instance"), [(n, i) for n, e in HOSTS.items() for i in e.instances]
)
def test_each_instance_config_names_the_other_instances_of_its_host(
    report: dict[str, Any], name: str, instance: str
) -> None:
    """The runtime VRAM ledger: the siblings file holds the other instances' configs as their
    own units read them (without a siblings file of their own, so nothing refers to itself)."""
    config = exec_config(report, name, unit(instance))
    assert config["siblingsFile"].startswith("/nix/store/"), config.get("siblingsFile")
    siblings = siblings_of(report, name, instance)
    assert set(siblings) == set(HOSTS[name].instances) - {instance}
    for other, value in siblings.items():
        own = dict(exec_config(report, name, unit(other)))
        own.pop("siblingsFile")
        assert value == own, f"{name}: {instance}'s copy of {other} differs from {other}'s"


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_each_service_contributes_its_own_health_checks(report: dict[str, Any], name: str) -> None:
    """The agent watches what the host runs because each module adds its checks."""
    agent = exec_config(report, name, "hydra-health")
    checks = agent["checks"]
    expected = {"gpu-exporter", "gpus"} | {f"inference-{i}" for i in HOSTS[name].instances}
    if HOSTS[name].gateway:
        expected.add("inference-gateway")
    assert set(checks) == expected
    assert checks["gpu-exporter"]["url"] == "http://127.0.0.1:9445/healthz"
    for instance, gpus in HOSTS[name].instances.items():
        check = checks[f"inference-{instance}"]
        assert check["unit"] == f"{unit(instance)}.service"
        assert check.get("dependsOn", []) == (["gpus"] if gpus else [])
    if HOSTS[name].gateway:
        gateway = checks["inference-gateway"]
        assert set(gateway["dependsOn"]) == {f"inference-{i}" for i in HOSTS[name].instances}


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_generated_configs_are_checked_when_the_system_is_built(
    report: dict[str, Any], name: str
) -> None:
    """The services' own checks are part of the system (linked under /etc) and of the flake's
    checks, so a config they refuse fails the build, not the start."""
    etc = host(report, name)["etc"]
    for entry in (
        "hydra-gpu-exporter/check.txt",
        "hydra-health/check.txt",
        "hydra-inference/plan.txt",
    ):
        assert etc.get(entry, {}).get("source", "").startswith("/nix/store/"), f"{name}: {entry}"
    assert f"configs-{name}" in report["checks"], sorted(report["checks"])


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_key_only_root_login_without_a_key_warns(report: dict[str, Any], name: str) -> None:
    """No host configures the operator's key yet: each says so at evaluation."""
    warnings = host(report, name)["warnings"]
    assert any("authorizedKeys has no key" in w for w in warnings), warnings


def test_scrape_targets_and_hosts_come_from_one_fleet_table(report: dict[str, Any]) -> None:
    """fleet.nix lists the NixOS hosts the flake builds; hydra-storage is in it, not built."""
    assert set(report["names"]["hosts"]) == set(HOSTS)
    assert "hydra-storage" in (REPO / "fleet.nix").read_text()


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_firewall_opens_exactly_the_intended_ports(report: dict[str, Any], name: str) -> None:
    firewall = host(report, name)["firewall"]
    assert firewall["enable"] is True
    assert set(firewall["allowedTCPPorts"]) == HOSTS[name].tcp_ports
    assert firewall["allowedUDPPorts"] == []
    assert firewall["allowedTCPPortRanges"] == []
    assert all(not ports.get("allowedTCPPorts") for ports in firewall["interfaces"].values())


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_every_opened_port_has_a_service_listening_beyond_loopback(
    report: dict[str, Any], name: str
) -> None:
    result = host(report, name)
    listeners: dict[int, str] = {}
    for configs in result["execConfigs"].values():
        for config in configs:
            value = config["value"]
            if isinstance(value, dict) and isinstance(value.get("port"), int):
                listeners[value["port"]] = value.get("listenAddress") or value.get("host", "")
    prometheus = result["services"].get("prometheus")
    if prometheus:
        flag = re.search(
            r"--web.listen-address=(\S+):(\d+)", prometheus["serviceConfig"]["ExecStart"]
        )
        assert flag is not None
        listeners[int(flag.group(2))] = flag.group(1)
    # sshd and nginx listen on every address by default.
    for port in set(result["firewall"]["allowedTCPPorts"]) - {22, 8080}:
        assert port in listeners, f"{name}: port {port} is open but nothing hydra listens on it"
        assert listeners[port] not in LOOPBACK, f"{name}: port {port} open, service on loopback"


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_unfree_is_scoped_to_the_nvidia_driver_and_cuda(report: dict[str, Any], name: str) -> None:
    allowed = host(report, name)["unfreeAllowed"]
    for package in NEVER_UNFREE:
        assert allowed[package] is False, f"{name}: unfree {package} allowed"
    if HOSTS[name].vendor == "nvidia":
        for package in CUDA_AND_DRIVER:
            assert allowed[package] is True, f"{name}: unfree {package} refused"
        # Headless: no nvidia-settings, so its name is not allowed either.
        assert allowed["nvidia-settings"] is False
    else:
        assert not any(allowed.values()), f"{name}: unfree allowed: {allowed}"


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_only_users_with_a_user_service_linger(report: dict[str, Any], name: str) -> None:
    result = host(report, name)
    # No host runs an engine as a login user's service, so nobody lingers.
    assert result["userServices"] == {}
    assert result["lingerUsers"] == []


def test_scrape_targets_list_every_exporter_and_agent(report: dict[str, Any]) -> None:
    package = report["packages"]["scrape-targets"]
    (generated,) = package["generatedConfigs"]
    targets = generated["value"]
    seen = {(t["labels"]["host"], t["labels"]["job"]): t["targets"] for t in targets}
    expected = {}
    for name in HOSTS:
        expected[(name, "hydra-gpu-exporter")] = [f"{name}:9445"]
        expected[(name, "hydra-health")] = [f"{name}:9446"]
        # What is scraped over the LAN must be open in the host's firewall.
        assert {9445, 9446} <= set(host(report, name)["firewall"]["allowedTCPPorts"])
        exporter = exec_config(report, name, "hydra-gpu-exporter")
        assert exporter["listenAddress"] == "0.0.0.0"
    assert seen == expected


def test_l_prometheus_scrapes_the_fleet_with_the_shipped_rules(report: dict[str, Any]) -> None:
    (prometheus,) = exec_config_list(report, "l", "prometheus")
    jobs = {c["job_name"]: c for c in prometheus["scrape_configs"]}
    assert {"hydra-gpu-exporter", "hydra-health", "node"} <= set(jobs)
    statics = jobs["hydra-gpu-exporter"]["static_configs"]
    exporter_targets = {target for static in statics for target in static["targets"]}
    assert exporter_targets == {f"{name}:9445" for name in HOSTS}
    # Store paths are <32-character hash>-<name>.
    rules = sorted(re.sub(r"^[0-9a-z]{32}-", "", Path(r).name) for r in prometheus["rule_files"])
    shipped = sorted(p.name for p in (REPO / "monitoring/rules").glob("*.rules.yml"))
    assert shipped, "monitoring/rules/*.rules.yml are missing"
    assert rules == shipped


def exec_config_list(report: dict[str, Any], name: str, unit_name: str) -> list[dict[str, Any]]:
    return [c["value"] for c in host(report, name)["execConfigs"].get(unit_name, [])]


# ---- the launcher's own verdict on each generated instance config ----------------------------


def launcher() -> Path:
    try:
        found = importlib.util.find_spec("hydra_fleet.launcher.cli") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        pytest.skip("the launcher is not part of this checkout yet")
    return Path(sys.executable).parent / "hydra-launch"


def instance_config(
    report: dict[str, Any], name: str, instance: str, tmp_path: Path, **changes: Any
) -> Path:
    """The generated config, with secret files (paths on the host) replaced by local ones and
    the siblings file (a store path on the host) by a local copy of its generated content."""
    config = exec_config(report, name, unit(instance)) | changes
    siblings = config.pop("siblingsFile", None)
    config = local_secrets(config, tmp_path)
    if siblings is not None:
        others = {
            other: local_secrets(value, tmp_path)
            for other, value in siblings_of(report, name, instance).items()
        }
        config["siblingsFile"] = str(tmp_path / f"{name}-{instance}-siblings.json")
        Path(config["siblingsFile"]).write_text(json.dumps(others))
    path = tmp_path / f"{name}-{instance}.json"
    path.write_text(json.dumps(config))
    return path


def siblings_of(report: dict[str, Any], name: str, instance: str) -> dict[str, Any]:
    """The generated siblings file of an instance: the host's other instances' configs."""
    wanted = f"{unit(instance)}-siblings.json"
    (value,) = [
        c["value"] for c in host(report, name)["execConfigs"][unit(instance)] if c["name"] == wanted
    ]
    siblings: dict[str, Any] = value
    return siblings


def local_secrets(value: Any, tmp_path: Path) -> Any:
    """`…File` keys point at /run/secrets on the host; here at a file with a stand-in value."""
    if isinstance(value, list):
        return [local_secrets(item, tmp_path) for item in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        if key.endswith("File") and isinstance(item, str):
            secret = tmp_path / f"secret-{len(list(tmp_path.iterdir()))}"
            secret.write_text("stand-in secret\n")
            result[key] = str(secret)
        else:
            result[key] = local_secrets(item, tmp_path)
    return result


def write_config(config: dict[str, Any], tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(local_secrets(config, tmp_path)))
    return path


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_generated_exporter_and_agent_configs_load(
    report: dict[str, Any], name: str, tmp_path: Path
) -> None:
    exporter = exec_config(report, name, "hydra-gpu-exporter")
    load(ExporterConfig, write_config(exporter, tmp_path, "exporter.json"), {})
    agent = exec_config(report, name, "hydra-health")
    load_config(write_config(agent, tmp_path, "agent.json"))
    # What `hydra-deploy` gates a switch with.
    gate = host(report, name)["etc"]["hydra-health/config.json"]["value"]
    load_config(write_config(gate, tmp_path, "gate.json"))
    assert gate["checks"] == agent["checks"]
    # Every service this host runs is watched by the agent.
    watched = {check.get("unit") for check in agent["checks"].values()}
    for unit_name in report["hosts"][name]["result"]["services"]:
        if unit_name.startswith(("hydra-inference-", "hydra-gpu-exporter")):
            assert f"{unit_name}.service" in watched or unit_name in watched, unit_name


@pytest.mark.parametrize(("name", "instance"), ALL_INSTANCES)
def test_generated_launcher_config_passes_check(
    report: dict[str, Any], name: str, instance: str, tmp_path: Path
) -> None:
    cli = launcher()
    path = instance_config(report, name, instance, tmp_path)
    done = subprocess.run(
        [str(cli), "check", "--static", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def plan(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(launcher()), "plan", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["_returncode"] = done.returncode
    return result


# ---- the driver profiles and the unfree predicate on probe hosts ---------------------------

PROBE_FLAKE = """
{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
  outputs = { self, nixpkgs }:
    let
      repo = /. + REPO;
      base = {
        networking.hostName = "probe";
        system.stateVersion = "26.05";
        nixpkgs.hostPlatform = "x86_64-linux";
        fileSystems."/" = { device = "/dev/sda1"; fsType = "ext4"; };
        boot.loader.grub.devices = [ "nodev" ];
      };
      card = vendor: model: vramGiB: arch: { inherit vendor model vramGiB arch; index = 0; };
      rtx5090 = card "nvidia" "RTX 5090" 32 "sm_120";
      rtx3090 = card "nvidia" "RTX 3090" 24 "sm_86";
      mi50 = card "amd" "MI50" 32 "gfx906";
      mk = extra: nixpkgs.lib.nixosSystem {
        modules = [
          (repo + "/modules")
          { nixpkgs.overlays = [ (import (repo + "/overlays")) ]; }
          base
          extra
        ];
      };
      # Ollama ROCm on the MI50, built for `targets`: what nixpkgs' ollama passes to CMake (a
      # derivation attribute there; the stand-in shows a derivation's attributes through
      # passthru).
      ollamaRocmFor = targets: mk {
        hydra.gpus = [ mi50 ];
        services.hydra-inference = {
          enable = true;
          instances.llm = {
            engine = "ollama";
            package = nixpkgs.legacyPackages.x86_64-linux.ollama-rocm.overrideAttrs {
              passthru.preBuild = "cmake -B build -DAMDGPU_TARGETS='${targets}'";
            };
            gpus = [ 0 ];
            model = "llama3.1:8b";
            contextLength = 4096;
          };
        };
      };
    in {
      nixosConfigurations = {
        allow-unfree = mk { nixpkgs.config.allowUnfree = true; };
        hsa-global = mk {
          hydra.gpus = [ mi50 ];
          environment.sessionVariables.HSA_OVERRIDE_GFX_VERSION = "9.0.6";
        };
        blackwell-closed = mk { hydra.gpus = [ rtx5090 ]; hardware.nvidia.open = false; };
        blackwell-old-driver = mk ({ config, ... }: {
          hydra.gpus = [ rtx5090 ];
          hardware.nvidia.package = config.boot.kernelPackages.nvidiaPackages.legacy_470;
        });
        ampere-closed = mk { hydra.gpus = [ rtx3090 ]; hardware.nvidia.open = false; };
        merged = mk { hydra.gpus = [ rtx5090 ]; hydra.unfree.allowedPackages = [ "steam" ]; };
        user-service = mk {
          hydra.gpus = [ mi50 ];
          users.users.alice = {
            isNormalUser = true;
            extraGroups = [ "render" "video" ];
          };
          users.users.bob.isNormalUser = true;
          services.hydra-inference = {
            enable = true;
            instances.notebook = {
              engine = "llama-cpp";
              gpus = [ 0 ];
              model = "/home/alice/models/small.gguf";
              contextLength = 4096;
              user = "alice";
              userService = true;
            };
          };
        };
        rocm-without-gfx906 = ollamaRocmFor "gfx1030;gfx1100";
        rocm-with-gfx906 = ollamaRocmFor "gfx906;gfx1102";
        agent-alone = mk {
          services.hydra-gpu-exporter.enable = false;
          services.hydra-health.enable = true;
        };
        described-only = mk {
          hydra.gpus = [ rtx5090 mi50 ];
          hydra.nvidia.enable = false;
          hydra.rocm.enable = false;
        };
      };
    };
}
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    flake = tmp_path_factory.mktemp("probe-flake")
    (flake / "flake.nix").write_text(PROBE_FLAKE.replace("REPO", json.dumps(str(REPO))))
    data = run_tool(flake, flake.parent / "probe-report.json")
    broken = [name for name, entry in data["hosts"].items() if "result" not in entry]
    assert not broken, f"probe hosts did not evaluate: {broken}\n{data['_output']}"
    return {name: entry["result"] for name, entry in data["hosts"].items()}


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ("allow-unfree", "add the\npackage names this host needs to hydra.unfree.allowedPackages"),
        ("hsa-global", "HSA_OVERRIDE_GFX_VERSION is set globally"),
        ("blackwell-closed", "only work with the open kernel module"),
        ("blackwell-old-driver", "need NVIDIA driver 570 or newer"),
    ],
)
def test_profiles_refuse_what_breaks_the_cards(
    probes: dict[str, dict[str, Any]], probe: str, message: str
) -> None:
    failed = probes[probe]["failedAssertions"]
    assert any(message in text for text in failed), failed


def test_profiles_accept_closed_driver_before_blackwell(probes: dict[str, dict[str, Any]]) -> None:
    assert probes["ampere-closed"]["failedAssertions"] == []
    assert probes["ampere-closed"]["hardware"]["nvidia"]["open"] is False


def test_unfree_names_from_every_module_make_one_predicate(
    probes: dict[str, dict[str, Any]],
) -> None:
    allowed = probes["merged"]["unfreeAllowed"]
    assert allowed["steam"] is True  # from the host
    assert allowed["nvidia-x11"] is True  # from the NVIDIA profile
    assert allowed["hello"] is False


def test_only_the_user_with_a_user_service_lingers(probes: dict[str, dict[str, Any]]) -> None:
    result = probes["user-service"]
    assert result["failedAssertions"] == []
    assert "hydra-inference-notebook" in result["userServices"]
    assert "hydra-inference-notebook" not in result["services"]
    assert result["lingerUsers"] == ["alice"]


def test_rocm_build_without_the_cards_target_is_refused_with_the_fix(
    probes: dict[str, dict[str, Any]],
) -> None:
    """An MI50 (gfx906) behind an Ollama built for other cards fails at evaluation, naming the
    override that builds it for the card; one built for gfx906 passes."""
    failed = probes["rocm-without-gfx906"]["failedAssertions"]
    assert any("no kernels for gfx906" in m and "rocmGpuTargets" in m for m in failed), failed
    assert probes["rocm-with-gfx906"]["failedAssertions"] == []


def test_the_agent_alone_watches_nothing_it_was_not_given(
    probes: dict[str, dict[str, Any]],
) -> None:
    """The agent's module knows no other service: with none enabled it has no checks."""
    result = probes["agent-alone"]
    assert result["failedAssertions"] == []
    (config,) = [c["value"] for c in result["execConfigs"]["hydra-health"] if c["format"] == "json"]
    assert config["checks"] == {}
    assert "hydra-gpu-exporter" not in result["services"]


def test_described_cards_without_drivers_allow_nothing_unfree(
    probes: dict[str, dict[str, Any]],
) -> None:
    result = probes["described-only"]
    assert result["failedAssertions"] == []
    assert not any(result["unfreeAllowed"].values())
    assert "nvidia" not in result["hardware"]["videoDrivers"]


def expected_pinning(report: dict[str, Any], name: str, instance: str) -> dict[str, str]:
    gpus = exec_config(report, name, unit(instance))["gpus"]
    if HOSTS[name].vendor == "nvidia":
        ids = [gpu.get("uuid") or str(gpu["index"]) for gpu in gpus]
        return {"CUDA_VISIBLE_DEVICES": ",".join(ids)}
    # ROCR picks the physical cards; HIP then numbers the visible ones from 0.
    return {
        "ROCR_VISIBLE_DEVICES": ",".join(str(gpu["index"]) for gpu in gpus),
        "HIP_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus))),
    }


@pytest.mark.parametrize(("name", "instance"), ALL_INSTANCES)
def test_plan_pins_the_instance_to_its_gpus_and_fits(
    report: dict[str, Any], name: str, instance: str, tmp_path: Path
) -> None:
    launcher()
    result = plan(instance_config(report, name, instance, tmp_path))
    for key, value in expected_pinning(report, name, instance).items():
        assert result["env"].get(key) == value, f"{name}: {instance} env {result['env']}"
    # Model files live on the host, not here: that is the only refusal allowed.
    others = [p for p in result["fatal"] if "does not exist" not in p]
    assert others == [], f"{name}: {instance}: {result['verdict']}"
    if exec_config(report, name, unit(instance))["engine"] == "command":
        return
    fit = result["fit"]
    assert fit["checked"] is True, fit
    for gpu in fit["gpus"]:
        assert gpu["fits"] is True, f"{name}: {instance} does not fit {gpu['gpu']}: {gpu}"
    assert [gpu["index"] for gpu in fit["gpus"]] == list(HOSTS[name].instances[instance])


@pytest.mark.parametrize(("context", "fits"), [(8192, True), (16384, True), (32768, False)])
def test_hydra_ai_70b_fits_16k_and_refuses_32k(
    report: dict[str, Any], context: int, fits: bool, tmp_path: Path
) -> None:
    """The operator's limits on 32 + 24 GB: 8K safe, 16K tight, 32K out of memory."""
    launcher()
    path = instance_config(report, "hydra-ai", "tabbyapi", tmp_path, contextLength=context)
    result = plan(path)
    fit = result["fit"]
    assert fit["split"] == "even (tensor parallel)", fit
    assert all(gpu["fits"] for gpu in fit["gpus"]) is fits, fit
    assert context <= fit["largestContext"] if fits else context > fit["largestContext"]
    if not fits:
        refusal = " ".join(result["fatal"])
        assert f"largest context that fits is {fit['largestContext']}" in refusal, refusal


def host_check(
    report: dict[str, Any],
    name: str,
    tmp_path: Path,
    only: Sequence[str] = (),
    **changes: Any,
) -> str:
    """`hydra-launch check --static` on a host's instance configs at once (all, or `only`), as
    the module's build-time check runs it; `changes` maps an instance to keys to override."""
    tmp_path.mkdir(exist_ok=True)
    argv = [str(launcher()), "check", "--static"]
    for instance in only or HOSTS[name].instances:
        path = instance_config(report, name, instance, tmp_path, **changes.get(instance, {}))
        argv += ["--config", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return f"{done.returncode}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_instances_sharing_a_gpu_fit_together(
    report: dict[str, Any], name: str, tmp_path: Path
) -> None:
    output = host_check(report, name, tmp_path)
    assert output.startswith("0\n"), output


def test_a_host_that_overcommits_a_gpu_is_refused_with_the_table(
    report: dict[str, Any], tmp_path: Path
) -> None:
    """l's MI50 holds Ollama and llama.cpp: Ollama at 64K fits the card alone, not beside
    llama.cpp, so the host's build-time check refuses it and prints the per-GPU table."""
    alone = host_check(report, "l", tmp_path / "alone", ["ollama"], ollama={"contextLength": 65536})
    assert alone.startswith("0\n"), alone
    output = host_check(report, "l", tmp_path, ollama={"contextLength": 65536})
    assert output.startswith("78\n"), output
    assert "gpus (all instances together)" in output
    assert "llama-mi50" in output
    assert "ollama" in output
