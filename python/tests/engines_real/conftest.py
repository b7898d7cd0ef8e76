"""The real-engine tier: the launcher against a real `llama-server` and a real LiteLLM proxy.

Skipped unless `HYDRA_LLAMA_SERVER` (and, for the gateway, `HYDRA_LITELLM`) point at the
binaries: `make test-engines` builds them once per machine (`scripts/build-llama-server`,
cached outside the repository) and runs this tier. The models are tiny GGUFs written here with
the `gguf` library: llama architecture, random weights, a complete SentencePiece tokenizer
and a chat template, so llama-server loads them and answers chat completions (nonsense).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

LAUNCH = [
    sys.executable,
    "-c",
    "from hydra_fleet.launcher.cli import main; raise SystemExit(main())",
]
API_KEY = "sk-hydra-real-engine-test"


def binary(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is not set (make test-engines builds and sets it)")
    path = Path(value)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{variable}={value} is not an executable")
    return path


@pytest.fixture(name="llama_server", scope="session")
def fixture_llama_server() -> Path:
    return binary("HYDRA_LLAMA_SERVER")


@pytest.fixture(name="litellm", scope="session")
def fixture_litellm() -> Path:
    return binary("HYDRA_LITELLM")


# ---- a small model llama-server really loads ------------------------------------------------

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass(frozen=True)
class Shape:
    layers: int = 2
    embedding: int = 256
    heads: int = 4
    kv_heads: int = 2
    feed_forward: int = 512
    context: int = 4096

    @property
    def head_dim(self) -> int:
        return self.embedding // self.heads


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s>, the 256 byte tokens, then letters and a few words (SentencePiece)."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    words = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += ["\u2581" + w for w in ("hello", "world", "the", "a", "user", "assistant", "hi")]
    words += ["\u2581", ":", "."]
    tokens += words
    types += [gguf.TokenType.NORMAL] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return tokens, scores, [int(t) for t in types]


def write_model(path: Path, shape: Shape = Shape()) -> Path:
    rng = np.random.default_rng(7)
    tokens, scores, types = vocabulary()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("hydra-test")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)

    def matrix(rows: int, cols: int) -> np.ndarray[Any, np.dtype[np.float16]]:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    def norm() -> np.ndarray[Any, np.dtype[np.float32]]:
        return np.ones(shape.embedding, dtype=np.float32)

    n_vocab, e = len(tokens), shape.embedding
    q, kv, ff = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.feed_forward
    writer.add_tensor("token_embd.weight", matrix(n_vocab, e))
    for i in range(shape.layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(q, e))
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(kv, e))
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(kv, e))
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(e, q))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(ff, e))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(ff, e))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(e, ff))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", matrix(n_vocab, e))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(name="model", scope="session")
def fixture_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("models") / "tiny-llama.gguf")


# ---- running hydra-launch -------------------------------------------------------------------


class NotifySocket:
    """A NOTIFY_SOCKET that records every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def wait_for(self, text: str, timeout: float) -> float | None:
        """The arrival time of the first message containing `text`, waiting up to `timeout`."""
        for at, message in self.messages:
            if text in message:
                return at
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            at = time.monotonic()
            self.messages.append((at, data))
            if text in data:
                return at
        return None


@pytest.fixture(name="notify")
def fixture_notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.sock.close()


@dataclass
class Launch:
    """`hydra-launch run` as systemd would start it, its output collected as it comes."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        """SIGTERM (if still running), then its exit code once it and its output are done."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish(60)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def buffer_mib(self, pattern: str) -> float:
        """A figure llama-server logs, e.g. `CPU KV buffer size =    16.00 MiB`."""
        for line in self.lines:
            match = re.search(pattern + r"\s*=\s*([0-9.]+) MiB", line)
            if match:
                return float(match.group(1))
        raise AssertionError(f"no {pattern!r} in the engine output:\n{self.output()[-4000:]}")


def write_config(tmp_path: Path, **keys: Any) -> Path:
    config = tmp_path / f"{keys.get('name', 'llm')}.json"
    config.write_text(json.dumps({"name": "llm", "workDir": str(tmp_path / "state"), **keys}))
    return config


def launch(config: Path, notify: NotifySocket, port: int) -> Launch:
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*LAUNCH, "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Launch(proc, port)


def llama_config(tmp_path: Path, llama_server: Path, model: Path, port: int, **keys: Any) -> Path:
    key = tmp_path / "api-key"
    key.write_text(API_KEY + "\n")
    base: dict[str, Any] = {
        "engine": "llama-cpp",
        "port": port,
        "model": str(model),
        "contextLength": 4096,
        "cpuOnly": True,
        "executable": str(llama_server),
        "apiKeyFile": str(key),
        "readiness": {"interval": 0.05, "timeout": 120, "stopTimeout": 20},
        "settings": {"threads": 2, "parallel": 1},
    }
    return write_config(tmp_path, **{**base, **keys})


# ---- figures for the closing note -----------------------------------------------------------

FIGURES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("real-engine figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"
