"""The gateway config as the NixOS module generates it, under the real LiteLLM proxy, in front
of a real llama-server, end to end: client -> LiteLLM -> llama-server, the master key from a
file, /v1/models, a completion, streaming.

The config mirrors `gatewayConfig` in modules/inference.nix (one model name per instance,
`openai/<name>` at the instance's /v1, its key from the environment, the master key from
`os.environ/LITELLM_MASTER_KEY`), and LiteLLM runs, as there, under hydra-launch as a
`command` instance ready on /health/readiness, offline (`LITELLM_LOCAL_MODEL_COST_MAP`).
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engines_real.conftest import (
    FIGURES,
    NotifySocket,
    launch,
    llama_config,
    write_config,
)
from tests.net import free_port

pytestmark = pytest.mark.real_engine
MASTER_KEY = "sk-hydra-master-for-tests"


def request(
    url: str, key: str | None = None, body: dict[str, Any] | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=120) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def gateway_config(instance: str, port: int) -> dict[str, Any]:
    env = "HYDRA_API_KEY_" + instance.upper().replace("-", "_").replace(".", "_")
    return {
        "model_list": [
            {
                "model_name": instance,
                "litellm_params": {
                    "model": f"openai/{instance}",
                    "api_base": f"http://127.0.0.1:{port}/v1",
                    "api_key": f"os.environ/{env}",
                },
            }
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }


def gateway_script(tmp_path: Path, litellm: Path, port: int, config: Path, key: Path) -> Path:
    """What the module's gatewayScript does, with files here for systemd's credentials."""
    master = tmp_path / "master-key"
    master.write_text(MASTER_KEY + "\n")
    script = tmp_path / "gateway"
    script.write_text(
        "#!/bin/sh\nset -eu\n"
        f"LITELLM_MASTER_KEY=$(cat {shlex.quote(str(master))})\nexport LITELLM_MASTER_KEY\n"
        f"HYDRA_API_KEY_LLM=$(head -n 1 {shlex.quote(str(key))})\nexport HYDRA_API_KEY_LLM\n"
        "export LITELLM_LOCAL_MODEL_COST_MAP=True DO_NOT_TRACK=True\n"
        f"exec {shlex.quote(str(litellm))} --host 127.0.0.1 --port {port} "
        f"--config {shlex.quote(str(config))}\n"
    )
    script.chmod(0o755)
    return script


def test_client_litellm_llama_server(
    tmp_path: Path, llama_server: Path, litellm: Path, model: Path, notify: NotifySocket
) -> None:
    engine_port, gateway_port = free_port(), free_port()
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    engine = launch(llama_config(engine_dir, llama_server, model, engine_port), notify, engine_port)
    gateway_notify = NotifySocket(tmp_path / "gateway-notify")
    gateway = None
    try:
        assert notify.wait_for("READY=1", 120) is not None, engine.output()[-4000:]
        config = tmp_path / "litellm.yaml"
        config.write_text(yaml.safe_dump(gateway_config("llm", engine_port)))
        script = gateway_script(tmp_path, litellm, gateway_port, config, engine_dir / "api-key")
        launch_config = write_config(
            tmp_path,
            name="gateway",
            engine="command",
            listenAddress="127.0.0.1",
            port=gateway_port,
            command=[str(script)],
            probePath="/health/readiness",
            readiness={"interval": 0.25, "timeout": 300},
        )
        started = time.monotonic()
        gateway = launch(launch_config, gateway_notify, gateway_port)
        ready = gateway_notify.wait_for("READY=1", 300)
        assert ready is not None, gateway.output()[-4000:]
        FIGURES["LiteLLM start to READY=1 (under hydra-launch)"] = f"{ready - started:.1f} s"
        base = f"http://127.0.0.1:{gateway_port}"

        status, body = request(f"{base}/v1/models", key=MASTER_KEY)
        assert status == 200, body
        assert [m["id"] for m in json.loads(body)["data"]] == ["llm"]
        assert request(f"{base}/v1/models")[0] == 401

        chat = {"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        status, body = request(f"{base}/v1/chat/completions", key=MASTER_KEY, body=chat)
        assert status == 200, body
        assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"

        status, body = request(
            f"{base}/v1/chat/completions", key=MASTER_KEY, body={**chat, "stream": True}
        )
        assert status == 200, body
        events = [line for line in body.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in events[:-1]]
        assert chunks
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        gateway_notify.sock.close()
        assert engine.stop() == 0
