"""`plan --json` per engine: the exact argv, environment and config file each must produce."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hydra_fleet.launcher import cli
from hydra_fleet.launcher.cli import main
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.gpu_probe import DeviceState
from tests.launcher.conftest import LLAMA3_70B_35, RTX4090, RTX5090
from tests.launcher.fakes import FakeGpus


@pytest.fixture(autouse=True)
def _gpus_as_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every declared GPU is present, idle, with its declared memory (no host GPU consulted)."""

    def probe(instance: Instance) -> FakeGpus | None:
        if not instance.gpus:
            return None
        found = [
            DeviceState(g.index, g.uuid, g.model, g.capacity_bytes, g.capacity_bytes)
            for g in instance.gpus
        ]
        return FakeGpus(found, vendor=instance.gpus[0].vendor)

    monkeypatch.setattr(cli, "_probe", probe)


MI50 = {"vendor": "amd", "model": "MI50", "vramGiB": 32, "arch": "gfx906", "index": 0}
W7500 = {"vendor": "amd", "model": "W7500", "vramGiB": 8, "arch": "gfx1102", "index": 1}


def plan(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], **keys: Any
) -> tuple[int, dict[str, Any]]:
    path = write_config(port=0 + keys.pop("port", 18099), name="llm", **keys)
    code = main(["plan", "--config", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_tabbyapi_config_yml(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """TabbyAPI: config.yml with explicit length, cache, split and tensor parallel; key file."""
    key = tmp_path / "key"
    key.write_text("sk-tabby\n")
    (tmp_path / "models" / "llama-70b-exl2").mkdir(parents=True)
    code, out = plan(
        write_config,
        capsys,
        engine="tabbyapi",
        model=str(tmp_path / "models" / "llama-70b-exl2"),
        contextLength=8000,
        gpus=[RTX5090, RTX4090],
        workDir=str(tmp_path / "w"),
        settings={"model": {"tensor_parallel": True}},
        modelInfo=LLAMA3_70B_35,
        apiKeyFile=str(key),
        executable="/opt/tabby/start",
    )
    assert code == 0, out["verdict"]
    config_path = str(tmp_path / "w" / "config.yml")
    assert out["argv"] == ["/opt/tabby/start", "--config", config_path]
    assert out["cwd"] == str(tmp_path / "w")
    assert out["env"] == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "GPU-5090,GPU-4090",
        "HOME": str(tmp_path / "w"),
        "XDG_CACHE_HOME": str(tmp_path / "w" / ".cache"),
    }
    config = yaml.safe_load(out["files"][config_path])
    assert config["network"] == {
        "host": "127.0.0.1",
        "port": 18099,
        "disable_auth": False,
        "api_servers": ["OAI"],
    }
    model = config["model"]
    assert model["model_dir"] == str(tmp_path / "models")
    assert model["model_name"] == "llama-70b-exl2"
    assert model["max_seq_len"] == 8000
    assert model["cache_size"] == 8192  # a multiple of 256, at least max_seq_len
    assert model["cache_mode"] == "FP16"
    assert model["tensor_parallel"] is True
    assert model["gpu_split_auto"] is False
    # Weights + KV (15.64 GiB each, tensor parallel) plus the same spare room on both: what
    # the smaller card has left after its overhead (1 GiB + 20 %), so the ratio stays even.
    rows = out["fit"]["gpus"]
    assert [round((r["weightsBytes"] + r["kvBytes"]) / 1024**3, 1) for r in rows] == [15.6] * 2
    budget_4090 = (rows[1]["capacityBytes"] - rows[1]["overheadBytes"]) / 1024**3
    assert model["gpu_split"] == [18.2, 18.2] == [int(budget_4090 * 100) / 100] * 2
    assert out["files"][str(tmp_path / "w" / "api_tokens.yml")] == "<redacted>"
    assert "sk-tabby" not in json.dumps(out)
    assert out["probe"] == {"kind": "http", "url": "http://127.0.0.1:18099/health", "models": []}


def test_llama_cpp_argv(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """llama-server: explicit -c, all layers, --fit off, our tensor split, key by file."""
    code, out = plan(
        write_config,
        capsys,
        engine="llama-cpp",
        model="models/q.gguf",
        listenAddress="0.0.0.0",
        contextLength=32768,
        cacheType="q8",
        gpus=[MI50, W7500],
        modelInfo={"weightsBytes": 20 * 1024**3, "layers": 64, "kvHeads": 8, "headDim": 128},
        apiKeyFile="/run/credentials/x/apiKey",
        hsaOverrideGfxVersion="11.0.0",
        settings={"metrics": True, "parallel": 2},
    )
    assert out["argv"] == [
        "llama-server",
        "--model",
        "models/q.gguf",
        "--host",
        "0.0.0.0",
        "--port",
        "18099",
        "--ctx-size",
        "32768",
        "--n-gpu-layers",
        "999",
        "--fit",
        "off",
        "--alias",
        "llm",
        "--split-mode",
        "layer",
        "--tensor-split",
        "0.820,0.180",
        "--cache-type-k",
        "q8_0",
        "--cache-type-v",
        "q8_0",
        "--flash-attn",
        "on",
        "--api-key-file",
        "/run/credentials/x/apiKey",
        "--metrics",
        "--parallel",
        "2",
    ]
    assert out["env"] == {
        "ROCR_VISIBLE_DEVICES": "0,1",
        "HIP_VISIBLE_DEVICES": "0,1",
        "HSA_OVERRIDE_GFX_VERSION": "11.0.0",
        "HOME": "/tmp/hydra-launch-llm",
        "XDG_CACHE_HOME": "/tmp/hydra-launch-llm/.cache",
    }
    assert out["probe"]["url"] == "http://127.0.0.1:18099/health"
    assert code == 0


def test_api_key_file_resolves_credentials_directory(
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`$CREDENTIALS_DIRECTORY` in apiKeyFile is systemd's LoadCredential directory."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/hydra-inference-llm.service")
    _, out = plan(
        write_config,
        capsys,
        engine="llama-cpp",
        model="m.gguf",
        contextLength=4096,
        cpuOnly=True,
        apiKeyFile="$CREDENTIALS_DIRECTORY/apiKey",
    )
    i = out["argv"].index("--api-key-file")
    assert out["argv"][i + 1] == "/run/credentials/hydra-inference-llm.service/apiKey"
    assert out["argv"][out["argv"].index("--n-gpu-layers") + 1] == "0"


def test_vllm_argv(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """vLLM: TP size = pinned GPUs, explicit utilization and length; key in env, hidden."""
    key = tmp_path / "key"
    key.write_text("sk-vllm")
    twin = {**RTX4090, "index": 2, "uuid": "GPU-4090b"}
    code, out = plan(
        write_config,
        capsys,
        engine="vllm",
        model="meta/llama-8b",
        contextLength=16384,
        gpus=[RTX4090, twin],
        gpuMemoryUtilization=0.85,
        apiKeyFile=str(key),
        modelInfo={"weightsBytes": 16 * 1024**3, "layers": 32, "kvHeads": 8, "headDim": 128},
    )
    assert out["argv"] == [
        "vllm",
        "serve",
        "meta/llama-8b",
        "--host",
        "127.0.0.1",
        "--port",
        "18099",
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.85",
        "--max-model-len",
        "16384",
        "--served-model-name",
        "llm",
    ]
    assert out["env"] == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "GPU-4090,GPU-4090b",
        "HOME": "/tmp/hydra-launch-llm",
        "XDG_CACHE_HOME": "/tmp/hydra-launch-llm/.cache",
        "VLLM_API_KEY": "<redacted>",
    }
    assert code == 0


def test_ollama_environment(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Ollama: everything through its environment; ready = the model is loaded."""
    code, out = plan(
        write_config,
        capsys,
        engine="ollama",
        model="qwen3:32b",
        contextLength=16384,
        cacheType="q8",
        gpus=[MI50],
        workDir="/var/lib/ollama-x",
        port=11434,
        settings={"OLLAMA_NUM_PARALLEL": "2"},
    )
    assert out["argv"] == ["ollama", "serve"]
    assert out["env"] == {
        "ROCR_VISIBLE_DEVICES": "0",
        "HIP_VISIBLE_DEVICES": "0",
        "HOME": "/var/lib/ollama-x",
        "XDG_CACHE_HOME": "/var/lib/ollama-x/.cache",
        "OLLAMA_HOST": "127.0.0.1:11434",
        "OLLAMA_CONTEXT_LENGTH": "16384",
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_MODELS": "/var/lib/ollama-x/models",
        "OLLAMA_KEEP_ALIVE": "-1",
        "OLLAMA_NUM_PARALLEL": "2",
        "OLLAMA_MAX_LOADED_MODELS": "1",
        "OLLAMA_FLASH_ATTENTION": "1",
    }
    assert out["probe"] == {
        "kind": "ollama",
        "url": "http://127.0.0.1:11434/",
        "models": ["qwen3:32b"],
    }
    assert code == 0


def test_command_engine(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain command keeps its argv; pinned by index when the GPU has no UUID."""
    gpu = {**RTX4090, "uuid": None}
    code, out = plan(
        write_config,
        capsys,
        engine="command",
        command=["comfyui", "--listen"],
        gpus=[gpu],
        probePath="/system_stats",
        environment={"TZ": "UTC"},
    )
    assert out["argv"] == ["comfyui", "--listen"]
    assert out["env"] == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "1",
        "TZ": "UTC",
    }
    assert out["probe"]["url"] == "http://127.0.0.1:18099/system_stats"
    assert code == 0


def test_plan_text_states_the_overhead(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The text plan shows the fit table, the stated overhead and the refusal (exit 78)."""
    path = write_config(
        engine="tabbyapi",
        port=18099,
        model="/m/x",
        contextLength=32768,
        gpus=[RTX5090, RTX4090],
        settings={"model": {"tensor_parallel": True}},
        modelInfo=LLAMA3_70B_35,
    )
    assert main(["plan", "--config", str(path)]) == 78
    text = capsys.readouterr().out
    assert "overhead per GPU = 1.00 GiB" in text
    assert "largest context that fits: 24832" in text
    assert "nvidia:1 RTX 4090" in text


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"engine": "vllm", "model": "m", "port": 1}, "contextLength: missing"),
        (
            {"engine": "ollama", "model": "m", "port": 1, "contextLength": 1, "apiKeyFile": "/k"},
            "Ollama has no API keys",
        ),
        (
            {
                "engine": "command",
                "port": 1,
                "command": ["x"],
                "environment": {"CUDA_VISIBLE_DEVICES": "0"},
            },
            "set by the launcher",
        ),
        (
            {
                "engine": "llama-cpp",
                "model": "m",
                "port": 1,
                "contextLength": 1,
                "cpuOnly": True,
                "settings": {"ctx-size": 5},
            },
            "settings.ctx-size",
        ),
        ({"engine": "tabby", "port": 1}, "engine"),
    ],
)
def test_bad_config_is_one_line_and_78(
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, Any],
    message: str,
) -> None:
    """Bad input: one clear line naming the field, exit 78, no traceback."""
    path = write_config(**keys)
    assert main(["check", "--config", str(path)]) == 78
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_plan_says_75_when_the_gpu_is_not_visible(
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pinned GPU is not there (driver not loaded): the plan says run would wait (75)."""
    monkeypatch.setattr(cli, "_probe", lambda _: FakeGpus([], unavailable_calls=1))
    path = write_config(engine="command", port=18099, command=["x"], gpus=[RTX4090])
    assert main(["plan", "--config", str(path)]) == 75
    assert "not now (75): /dev/nvidia-uvm missing" in capsys.readouterr().out
