"""hydra-launch against a real llama-server (CPU build): argv, readiness, a chat, stop, death,
the refusals, and the plan's memory figures against what llama.cpp allocates."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.launcher import fit as fitting
from hydra_fleet.launcher import preflight
from hydra_fleet.launcher.config import load
from tests.engines_real.conftest import (
    API_KEY,
    FIGURES,
    NotifySocket,
    Shape,
    children,
    gone,
    launch,
    llama_config,
    write_model,
)
from tests.net import free_port

pytestmark = pytest.mark.real_engine
MIB = 1024**2


def get(url: str, key: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class HealthWatch:
    """Polls /health every 10 ms from the outside, recording what it answered and when."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/health"
        self.seen: list[tuple[float, int]] = []  # (monotonic time, status; 0 = refused)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:  # noqa: S310
                    status = response.status
            except urllib.error.HTTPError as err:
                status = err.code
            except OSError:
                status = 0
            self.seen.append((time.monotonic(), status))
            time.sleep(0.01)

    def first(self, status: int) -> float | None:
        return next((t for t, s in self.seen if s == status), None)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


def test_ready_only_after_health_200_then_chat_and_stop(
    tmp_path: Path, llama_server: Path, model: Path, notify: NotifySocket
) -> None:
    """Every flag hydra passes is accepted; READY=1 comes after /health is 200, never before;
    a chat completion needs the key; SIGTERM stops the engine and the launcher exits 0."""
    port = free_port()
    watch = HealthWatch(port)
    run = launch(llama_config(tmp_path, llama_server, model, port), notify, port)
    try:
        ready_at = notify.wait_for("READY=1", 120)
        watch.stop()
        assert ready_at is not None, run.output()[-4000:]
        ok_at = watch.first(200)
        assert ok_at is not None
        # Never before: at READY=1 the probe had been answered 200 (10 ms polling slack).
        assert ready_at >= ok_at - 0.02
        assert all(s != 200 for t, s in watch.seen if t < ok_at)
        FIGURES["readiness lag (READY=1 after /health 200)"] = f"{(ready_at - ok_at) * 1000:.0f} ms"
        FIGURES["statuses seen before 200"] = ", ".join(
            sorted({str(s or "refused") for t, s in watch.seen if t < ok_at})
        )
        assert get(f"http://127.0.0.1:{port}/health")[0] == 200

        chat = {"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        assert get(url, body=chat)[0] == 401
        status, text = get(url, key=API_KEY, body=chat)
        assert status == 200, text
        answer = json.loads(text)
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] >= 1

        (engine,) = children(run.proc.pid)
        assert run.stop() == 0
        deadline = time.monotonic() + 10
        while not gone(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(engine)
    finally:
        watch.stop()
        run.stop()


def test_engine_death_ends_the_run(
    tmp_path: Path, llama_server: Path, model: Path, notify: NotifySocket
) -> None:
    port = free_port()
    config = llama_config(
        tmp_path,
        llama_server,
        model,
        port,
        readiness={"interval": 0.05, "liveness": {"interval": 0.5, "timeout": 5}},
    )
    run = launch(config, notify, port)
    try:
        assert notify.wait_for("READY=1", 120) is not None, run.output()[-4000:]
        (engine,) = children(run.proc.pid)
        os.kill(engine, signal.SIGKILL)
        code = run.finish(30)
        assert code not in (0, 78)
        assert notify.wait_for("STATUS=engine exited", 5) is not None
    finally:
        run.stop()


def test_an_argument_llama_server_refuses_is_78_with_its_line(
    tmp_path: Path, llama_server: Path, model: Path, notify: NotifySocket
) -> None:
    port = free_port()
    config = llama_config(
        tmp_path, llama_server, model, port, settings={"no-such-flag-for-hydra": True}
    )
    run = launch(config, notify, port)
    assert run.finish(60) == 78
    refusal = [line for line in run.lines if "refused to start" in line]
    assert refusal, run.output()[-4000:]
    assert "error: invalid argument: --no-such-flag-for-hydra" in refusal[0]


def test_truncated_model_is_refused_before_start(
    tmp_path: Path, llama_server: Path, notify: NotifySocket
) -> None:
    """Cut short, the file makes llama-server exit 1 ("data is not within the file bounds");
    the launcher refuses it (78) before starting anything."""
    model = write_model(tmp_path / "partial.gguf")
    with model.open("r+b") as handle:
        handle.truncate(model.stat().st_size // 2)
    port = free_port()
    run = launch(llama_config(tmp_path, llama_server, model, port), notify, port)
    assert run.finish(60) == 78
    assert "truncated or partly downloaded" in run.output()
    assert notify.wait_for("STATUS=refused (78)", 2) is not None


def test_context_above_the_trained_one_is_refused(
    tmp_path: Path, llama_server: Path, model: Path, notify: NotifySocket
) -> None:
    port = free_port()
    config = llama_config(tmp_path, llama_server, model, port, contextLength=16384)
    run = launch(config, notify, port)
    assert run.finish(60) == 78
    assert "contextLength: 16384 is above the model's trained context 4096" in run.output()


@pytest.mark.parametrize(
    ("cache", "context"), [("f16", 4096), ("q8", 8192), ("q4", 5000), ("bf16", 16384)]
)
def test_plan_matches_what_llama_cpp_allocates(
    tmp_path: Path,
    llama_server: Path,
    notify: NotifySocket,
    cache: str,
    context: int,
) -> None:
    """The plan's weights and KV cache against llama.cpp's own buffer sizes (its log)."""
    model = write_model(tmp_path / "m.gguf", Shape(context=32768, embedding=512, layers=4))
    port = free_port()
    config = llama_config(
        tmp_path,
        llama_server,
        model,
        port,
        contextLength=context,
        cacheType=cache,
        # llama.cpp's own buffer lines are logged from verbosity 4 on.
        settings={"threads": 2, "parallel": 1, "verbosity": 4},
    )
    instance = load(config)
    pre = preflight.run(instance, None)
    assert not pre.fatal, pre.fatal
    planned_kv = fitting.kv_bytes(pre.facts, fitting.cached_tokens(instance), cache)
    assert planned_kv is not None
    assert pre.facts.weights_bytes is not None
    run = launch(config, notify, port)
    try:
        assert notify.wait_for("READY=1", 120) is not None, run.output()[-4000:]
        kv = run.buffer_mib("KV buffer size")
        weights = run.buffer_mib("model buffer size")
    finally:
        run.stop()
    kv_ratio = planned_kv / (kv * MIB)
    weights_ratio = pre.facts.weights_bytes / (weights * MIB)
    FIGURES[f"plan/llama.cpp KV, {cache} at {context}"] = f"{kv_ratio:.4f}"
    FIGURES[f"plan/llama.cpp weights, {cache} at {context}"] = f"{weights_ratio:.4f}"
    assert abs(planned_kv / MIB - kv) <= 0.005  # llama.cpp logs MiB to two decimals
    assert 1 <= weights_ratio < 1.05  # the file holds the tokenizer too
