"""Each engine's contract, validated when the config loads: `check`, `plan` and `run` refuse
the same things with the same one-line message; the model refusals; CPU only by name."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import yaml

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher import cli, config, preflight
from hydra_fleet.launcher.cli import main
from hydra_fleet.launcher.engines import ENGINES, Features, launch_spec
from tests.launcher.conftest import LLAMA3_70B_35, RTX4090, RTX5090, instance

GIB = 1024**3


@pytest.fixture(autouse=True)
def _no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """No host GPU is consulted (the plan uses the declared capacities)."""
    monkeypatch.setattr(cli, "_probe", lambda _: None)


def write_llama(path: Path, *, context: int = 4096, tensors: int = 4) -> Path:
    """A small llama GGUF with real tensor data (64 x 64 f32 each)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(context)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    for i in range(tensors):
        writer.add_tensor(f"blk.{i}.w", np.ones((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def three_commands(path: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[int, str]]:
    """The exit code and error line of check, plan and run on one config (run refuses
    before starting anything; plan prints its plan on stdout besides)."""
    capsys.readouterr()  # what came before (gguf's writer logs through a stale handler)
    said = []
    for command in ("check", "plan", "run"):
        code = main([command, "--config", str(path)])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        said.append((code, err))
    return said


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"engine": "llama-cpp", "cacheType": "q6", "gpus": [RTX4090]},
            'cacheType: "q6" is not a cache type llama-cpp has (bf16, f16, q4, q8)',
        ),
        (
            {"engine": "llama-cpp", "cacheType": "fp8", "gpus": [RTX4090]},
            'cacheType: "fp8" is not a cache type llama-cpp has',
        ),
        (
            {"engine": "tabbyapi", "cacheType": "fp8", "gpus": [RTX4090]},
            'cacheType: "fp8" is not a cache type tabbyapi has (f16, q4, q6, q8)',
        ),
        (
            {"engine": "vllm", "cacheType": "q4", "gpus": [RTX4090]},
            'cacheType: "q4" is not a cache type vllm has',
        ),
        (
            {"engine": "llama-cpp", "gpus": []},
            "gpus: empty: the engine would run on the CPU; pin its GPUs, or set cpuOnly: true",
        ),
        (
            {"engine": "llama-cpp", "gpus": [RTX4090], "cpuOnly": True},
            "cpuOnly: true with GPUs pinned",
        ),
        (
            {"engine": "vllm", "gpus": [RTX4090], "adminKeyFile": "/k"},
            "adminKeyFile: only TabbyAPI has an admin key",
        ),
    ],
)
def test_check_plan_and_run_refuse_alike(
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, Any],
    message: str,
) -> None:
    """The same one line naming file and field, exit 78, no traceback, from all three."""
    path = write_config(port=18098, model="/m/x", contextLength=4096, **keys)
    said = three_commands(path, capsys)
    for code, text in said:
        assert code == 78, text
        assert f"hydra-launch: {path}: {message}" in text


def test_missing_model_is_refused_by_check_too(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "gone.gguf"
    path = write_config(
        engine="llama-cpp", port=18098, model=str(missing), contextLength=4096, cpuOnly=True
    )
    for code, text in three_commands(path, capsys):
        assert code == 78, text
        assert f"{path}: model: {missing} does not exist" in text


def test_truncated_gguf_is_refused(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The header is intact but the tensor data is cut short (a partial download): 78 from
    check, plan and run, where llama-server would exit 1 on every restart."""
    model = write_llama(tmp_path / "m.gguf")
    whole = model.stat().st_size
    with model.open("r+b") as handle:
        handle.truncate(whole - 4096)
    path = write_config(
        engine="llama-cpp", port=18098, model=str(model), contextLength=4096, cpuOnly=True
    )
    for code, text in three_commands(path, capsys):
        assert code == 78, text
        assert f"{path}: model: {model}: GGUF tensor 'blk.3.w' data ends at byte {whole}" in text
        assert "truncated or partly downloaded" in text


def test_whole_gguf_passes(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = write_llama(tmp_path / "m.gguf")
    path = write_config(
        engine="llama-cpp", port=18098, model=str(model), contextLength=4096, cpuOnly=True
    )
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err


def test_context_above_the_trained_one(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A 4K model at 8K: refused; the largest context the plan offers never exceeds 4K."""
    model = write_llama(tmp_path / "m.gguf", context=4096)
    path = write_config(
        engine="llama-cpp", port=18098, model=str(model), contextLength=8192, gpus=[RTX5090]
    )
    for code, text in three_commands(path, capsys):
        assert code == 78, text
        assert f"{path}: contextLength: 8192 is above the model's trained context 4096" in text
    main(["plan", "--config", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["fit"]["largestContext"] == 4096


def test_stated_max_context_allows_rope_scaling(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = write_llama(tmp_path / "m.gguf", context=4096)
    path = write_config(
        engine="llama-cpp",
        port=18098,
        model=str(model),
        contextLength=8192,
        gpus=[RTX5090],
        modelInfo={"maxContext": 16384},
        settings={"rope-scaling": "yarn"},
    )
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err


def test_cpu_only_is_said_in_the_plan(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        engine="llama-cpp", port=18098, model="m.gguf", contextLength=4096, cpuOnly=True
    )
    assert main(["plan", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "--n-gpu-layers 0" in text
    assert "env       CUDA_VISIBLE_DEVICES=-1" in text
    assert "note      CPU only (cpuOnly: true)" in text


def test_old_llama_server_without_fit(tmp_path: Path) -> None:
    """An older llama-server has no --fit (it would exit 1 on it): the flag is left out, and
    `--flash-attn` gets no value where the help shows none."""
    inst = instance(
        engine="llama-cpp", model="m.gguf", contextLength=4096, cpuOnly=True, cacheType="q8"
    )
    fit = preflight.run(inst, None).fit
    old = launch_spec(inst, fit, {}, features=Features("-fa,  --flash-attn  enable Flash"))
    assert "--fit" not in old.argv
    assert old.argv[-1] == "--flash-attn"
    assert any("no --fit" in note for note in old.notes)
    new = launch_spec(
        inst, fit, {}, features=Features("--fit [on|off]  fit\n-fa, --flash-attn [on|off|auto]")
    )
    assert new.argv[new.argv.index("--fit") + 1] == "off"
    assert new.argv[new.argv.index("--flash-attn") + 1] == "on"


def test_kv_padded_to_256_for_llama_cpp() -> None:
    """llama.cpp allocates KV for the context padded to 256: 5000 tokens cost 5120."""
    inst = instance(
        engine="llama-cpp",
        model="m.gguf",
        contextLength=5000,
        gpus=[RTX4090],
        modelInfo={"weightsBytes": GIB, "layers": 32, "kvHeads": 8, "headDim": 128},
    )
    row = preflight.run(inst, None).fit.gpus[0]
    assert row.kv == 2 * 32 * 8 * 128 * 5120 * 2


def test_vllm_bf16_cache_flag() -> None:
    inst = instance(
        engine="vllm", model="meta/llama", contextLength=4096, gpus=[RTX4090], cacheType="bf16"
    )
    spec = launch_spec(inst, preflight.run(inst, None).fit, {})
    assert spec.argv[spec.argv.index("--kv-cache-dtype") + 1] == "bfloat16"


@pytest.mark.parametrize("engine", ["llama-cpp", "vllm", "tabbyapi", "ollama"])
def test_home_and_cache_in_the_state_directory(engine: str) -> None:
    inst = instance(engine=engine, model="/m/x", contextLength=4096, gpus=[RTX4090], workDir=None)
    spec = launch_spec(inst, preflight.run(inst, None).fit, {"STATE_DIRECTORY": "/var/lib/x"})
    assert spec.env["HOME"] == "/var/lib/x"
    assert spec.env["XDG_CACHE_HOME"] == "/var/lib/x/.cache"
    assert "/var/lib/x" in spec.dirs


def test_ollama_liveness_does_not_use_api_ps() -> None:
    inst = instance(engine="ollama", model="qwen3:8b", contextLength=4096, gpus=[RTX4090])
    spec = launch_spec(inst, preflight.run(inst, None).fit, {})
    assert spec.probe.kind == "ollama"
    assert spec.liveness is not None
    assert spec.liveness.kind == "http"
    assert spec.liveness.url == "http://127.0.0.1:5000/"


# ---- TabbyAPI ------------------------------------------------------------------------------


def exl2_model(tmp_path: Path, method: str = "exl2") -> Path:
    model = tmp_path / "models" / "llama-70b"
    model.mkdir(parents=True)
    (model / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 80,
                "num_attention_heads": 64,
                "num_key_value_heads": 8,
                "hidden_size": 8192,
                "max_position_embeddings": 8192,
                "quantization_config": {"quant_method": method, "bits": 3.5},
            }
        )
    )
    return model


def tabby_checkout(tmp_path: Path, *backends: str) -> Path:
    source = tmp_path / "tabbyAPI"
    for backend in backends:
        (source / "backends" / backend).mkdir(parents=True)
    (source / "main.py").write_text("")
    return source


def test_exl2_on_a_tabbyapi_without_exllamav2(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Current TabbyAPI refuses EXL2 at load: refused before start, naming 79126f9."""
    source = tabby_checkout(tmp_path, "exllamav3")
    path = write_config(
        engine="tabbyapi",
        port=18098,
        model=str(exl2_model(tmp_path)),
        contextLength=4096,
        gpus=[RTX5090, RTX4090],
        modelInfo=LLAMA3_70B_35,
        engineSource=str(source),
    )
    for code, text in three_commands(path, capsys):
        assert code == 78, text
        assert "has no ExLlamaV2 backend" in text
        assert "pin TabbyAPI at 79126f9" in text


def test_exl2_on_the_exllamav2_checkout(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The checkout is found from the executable when engineSource is not set."""
    source = tabby_checkout(tmp_path, "exllamav2")
    (source / "start.sh").write_text("#!/bin/sh\n")
    path = write_config(
        engine="tabbyapi",
        port=18098,
        model=str(exl2_model(tmp_path)),
        contextLength=4096,
        gpus=[RTX5090, RTX4090],
        modelInfo=LLAMA3_70B_35,
        executable=str(source / "start.sh"),
    )
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err


def test_tabbyapi_admin_key_is_not_the_api_key(tmp_path: Path) -> None:
    """Without adminKeyFile the admin key is random (no client can unload the model)."""
    key = tmp_path / "key"
    key.write_text("sk-client\n")
    admin = tmp_path / "admin"
    admin.write_text("sk-admin\n")
    base = {
        "engine": "tabbyapi",
        "model": "/m/x",
        "contextLength": 4096,
        "gpus": [RTX4090],
        "apiKeyFile": str(key),
        "workDir": str(tmp_path / "w"),
    }
    tokens = str(tmp_path / "w" / "api_tokens.yml")
    for keys, expected_admin in (({}, None), ({"adminKeyFile": str(admin)}, "sk-admin")):
        inst = instance(**base, **keys)
        spec = launch_spec(inst, preflight.run(inst, None).fit, {}, reveal=True)
        written = yaml.safe_load(spec.files[tokens])
        assert written["api_key"] == "sk-client"
        assert written["admin_key"] != "sk-client"
        if expected_admin:
            assert written["admin_key"] == expected_admin
        else:
            assert len(written["admin_key"]) >= 32
        assert spec.cwd == str(tmp_path / "w")
        assert tokens in spec.secret_files


def test_tabbyapi_split_has_room_on_a_layer_split() -> None:
    """Layer split: each GPU's share of weights + KV, plus what that GPU has left."""
    inst = instance(
        engine="tabbyapi",
        model="/m/x",
        contextLength=8192,
        gpus=[RTX5090, RTX4090],
        modelInfo=LLAMA3_70B_35,
    )
    fit = preflight.run(inst, None).fit
    spec = launch_spec(inst, fit, {})
    split = yaml.safe_load(spec.files["/srv/llm/config.yml"])["model"]["gpu_split"]
    for row, given in zip(fit.gpus, split, strict=True):
        assert (row.weights + row.kv) / GIB < given
        assert given <= (row.capacity - row.overhead) / GIB


def test_config_keys_validated_at_load(tmp_path: Path) -> None:
    """`listenAddress` is the key (`host` is gone); engine rules apply at load."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"engine": "vllm", "port": 1, "model": "m", "host": "::"}))
    with pytest.raises(ConfigError, match="host"):
        config.load(path)


def test_out_of_memory_at_load_is_not_a_refusal() -> None:
    """ "failed to load model" after an allocation failure may clear: not a 78."""
    llama = ENGINES["llama-cpp"]
    assert llama.refusal(["error: invalid argument: --fit"]) == "error: invalid argument: --fit"
    oom = [
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000 MiB: cudaMalloc failed: "
        "out of memory",
        "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
        "failed to load model",
    ]
    assert llama.refusal(oom) is None


@pytest.mark.parametrize("kind", ["fifo", "empty"])
def test_key_files_are_read_by_the_core_secret_reader(kind: str, tmp_path: Path) -> None:
    """A FIFO as a key file is refused, never waited on, and an empty one is refused; both
    as the one-line config error every service gives (file and field named)."""
    key = tmp_path / "key"
    if kind == "fifo":
        os.mkfifo(key)
    else:
        key.write_text("\n")
    inst = instance(
        engine="vllm",
        model="/m/x",
        contextLength=4096,
        gpus=[RTX4090],
        apiKeyFile=str(key),
    )
    with pytest.raises(ConfigError) as raised:
        launch_spec(inst, preflight.run(inst, None).fit, {}, reveal=True)
    assert raised.value.field == "apiKeyFile"
    assert ("found a FIFO" if kind == "fifo" else "is empty") in str(raised.value)
    path = tmp_path / "llm.json"
    path.write_text(
        json.dumps(
            {
                "engine": "command",
                "command": ["true"],
                "port": 8000,
                "cpuOnly": True,
                "apiKeyFile": str(key),
            }
        )
    )
    with pytest.raises(ConfigError) as raised:
        config.check_api_key(config.load(path), path, {}, at_start=True)
    assert raised.value.source == str(path)


def test_every_engine_module_is_an_engine_and_nothing_else_is() -> None:
    """Adding an engine is adding its module to launcher/engines/: the registry is what the
    package holds, and the config accepts exactly those names."""
    modules = sorted(
        p.stem.replace("_", "-")
        for p in Path(cli.__file__).parent.joinpath("engines").glob("*.py")
        if p.stem not in ("__init__", "base")
    )
    assert sorted(ENGINES) == modules
    assert all(name == engine.name for name, engine in ENGINES.items())


def test_an_unknown_engine_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"engine": "sglang", "port": 1, "model": "m"}))
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    assert raised.value.field == "engine"
    assert '"llama-cpp"' in str(raised.value)
    assert "'sglang'" in str(raised.value)
