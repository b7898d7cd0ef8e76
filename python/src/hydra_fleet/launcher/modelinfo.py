"""Model facts for the VRAM fit, read from metadata only, never by loading the model.

GGUF: the header and key/value section are streamed with bounded reads (the value types are
the `gguf` library's `GGUFValueType`); tensor data is never touched, so a 40 GB file costs a
few kilobytes. EXL2/EXL3/HF directories: `config.json` (+ `quantization_config`), and the
weights are the sum of the `*.safetensors` sizes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gguf import GGUF_MAGIC, GGUFValueType

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher.config import Instance, ModelInfo

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
# Arrays longer than this (tokenizer vocabularies) are skipped, not decoded.
_MAX_ARRAY_KEPT = 4096


@dataclass(frozen=True)
class ModelFacts:
    """What the fit needs; any field may be unknown (None)."""

    source: str
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    weights_bytes: int | None = None
    max_context: int | None = None
    bits_per_weight: float | None = None

    @property
    def kv_bytes_per_token_elem(self) -> int | None:
        """2 x layers x kvHeads x headDim: KV elements per token of context."""
        if self.layers and self.kv_heads and self.head_dim:
            return 2 * self.layers * self.kv_heads * self.head_dim
        return None


class _Stream:
    """Bounded little-endian reads that count the bytes they consume."""

    def __init__(self, handle: BinaryIO, name: str) -> None:
        self.handle = handle
        self.name = name

    def take(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise ConfigError(self.name, "model", "GGUF header is truncated")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 24:
            raise ConfigError(self.name, "model", "GGUF header has an implausible string length")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            item = GGUFValueType(self.unpack("<I"))
            count = self.unpack("<Q")
            if count > _MAX_ARRAY_KEPT:
                self.skip_array(item, count)
                return None
            return [self.value(item) for _ in range(count)]
        return self.unpack(_SCALARS[vtype])

    def skip_array(self, item: GGUFValueType, count: int) -> None:
        if item in _SCALARS:
            self.handle.seek(struct.calcsize(_SCALARS[item]) * count, 1)
            return
        for _ in range(count):
            self.value(item)


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The key/value section of a GGUF file (large arrays left out as None)."""
    name = str(path)
    try:
        with path.open("rb", buffering=64 * 1024) as handle:
            stream = _Stream(handle, name)
            if stream.unpack("<I") != GGUF_MAGIC:
                raise ConfigError(name, "model", "not a GGUF file (bad magic)")
            version = stream.unpack("<I")
            if version not in (2, 3):
                raise ConfigError(name, "model", f"unsupported GGUF version {version}")
            stream.unpack("<Q")  # tensor count
            count = stream.unpack("<Q")
            metadata: dict[str, Any] = {}
            for _ in range(count):
                key = stream.string()
                try:
                    vtype = GGUFValueType(stream.unpack("<I"))
                except ValueError as err:
                    raise ConfigError(name, "model", f"GGUF key {key}: bad type") from err
                metadata[key] = stream.value(vtype)
            return metadata
    except OSError as err:
        raise ConfigError(name, "model", f"cannot read the model file: {err.strerror}") from err


def _first(value: Any) -> int | None:
    """head_count_kv may be a per-layer array; the fit uses the largest entry."""
    if isinstance(value, list):
        numbers = [v for v in value if isinstance(v, int)]
        return max(numbers) if numbers else None
    return value if isinstance(value, int) else None


def gguf_facts(path: Path) -> ModelFacts:
    meta = read_gguf_metadata(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ConfigError(str(path), "model", "GGUF header has no general.architecture")
    layers = _first(meta.get(f"{arch}.block_count"))
    heads = _first(meta.get(f"{arch}.attention.head_count"))
    kv_heads = _first(meta.get(f"{arch}.attention.head_count_kv")) or heads
    embedding = _first(meta.get(f"{arch}.embedding_length"))
    head_dim = _first(meta.get(f"{arch}.attention.key_length"))
    if head_dim is None and embedding and heads:
        head_dim = embedding // heads
    return ModelFacts(
        source=f"GGUF header of {path}",
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        weights_bytes=path.stat().st_size,
        max_context=_first(meta.get(f"{arch}.context_length")),
    )


def hf_facts(directory: Path) -> ModelFacts:
    """config.json of an EXL2/EXL3/HF model directory."""
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(str(config_path), "", f"cannot read: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise ConfigError(str(config_path), "", f"not valid JSON: {err.msg}") from err
    if not isinstance(config, dict):
        raise ConfigError(str(config_path), "", "expected a JSON object")
    text = config.get("text_config")
    if isinstance(text, dict):  # multimodal wrappers keep the language model here
        config = {**config, **text}
    heads = config.get("num_attention_heads")
    hidden = config.get("hidden_size")
    head_dim = config.get("head_dim")
    if not isinstance(head_dim, int) and isinstance(hidden, int) and isinstance(heads, int):
        head_dim = hidden // heads
    kv_heads = config.get("num_key_value_heads", heads)
    quant = config.get("quantization_config")
    bits = quant.get("bits") if isinstance(quant, dict) else None
    weights = sum(f.stat().st_size for f in directory.glob("*.safetensors")) or None
    return ModelFacts(
        source=f"{config_path}",
        layers=config.get("num_hidden_layers"),
        kv_heads=kv_heads if isinstance(kv_heads, int) else None,
        head_dim=head_dim if isinstance(head_dim, int) else None,
        weights_bytes=weights,
        max_context=config.get("max_position_embeddings"),
        bits_per_weight=float(bits) if isinstance(bits, int | float) else None,
    )


def _stated(info: ModelInfo, base: ModelFacts) -> ModelFacts:
    """Explicit `modelInfo` wins over what the files say."""
    weights = info.weights_bytes
    bits = info.bits_per_weight or base.bits_per_weight
    if weights is None and info.parameters and bits:
        weights = int(info.parameters * bits / 8)
    source = "modelInfo" if base.source == "" else f"modelInfo + {base.source}"
    return ModelFacts(
        source=source,
        layers=info.layers or base.layers,
        kv_heads=info.kv_heads or base.kv_heads,
        head_dim=info.head_dim or base.head_dim,
        weights_bytes=weights or base.weights_bytes,
        max_context=info.max_context or base.max_context,
        bits_per_weight=bits,
    )


def model_facts(instance: Instance) -> ModelFacts:
    """Facts from the model files where they are readable, overridden by `modelInfo`."""
    base = ModelFacts(source="")
    path = Path(instance.model) if instance.model.startswith("/") else None
    if path is not None and path.exists():
        if path.is_dir() and ((path / "config.json").exists() or instance.model_info is None):
            base = hf_facts(path)
        elif path.suffix == ".gguf":
            base = gguf_facts(path)
    if instance.model_info is not None:
        return _stated(instance.model_info, base)
    return base
