"""Model facts for the VRAM fit, read from metadata only, never by loading the model.

GGUF: the header, the key/value section and the tensor table are parsed from a memory map,
so only the pages they occupy are read; the tokenizer's arrays (152k strings in a Qwen
vocabulary) are skipped by their lengths, never decoded. The tensor table gives where the
tensor data must end: a file shorter than that (truncated, partly downloaded) is refused
here, where llama-server would exit 1 on every restart ("data is not within the file
bounds"). EXL2/EXL3/HF directories: `config.json` (+ `quantization_config`), and the weights
are the sum of the `*.safetensors` sizes.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.launcher.config import Instance, ModelInfo

_SCALARS: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Arrays longer than this (tokenizer vocabularies, merges) are skipped, not decoded.
_MAX_ARRAY_KEPT = 4096
_MAX_STRING = 1 << 24
_DEFAULT_ALIGNMENT = 32


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


@dataclass(frozen=True)
class GgufHeader:
    metadata: dict[str, Any]
    tensors: int
    tensor_bytes: int  # the sum of every tensor's data
    data_end: int  # where the last tensor's data ends (offset + size, after the header)
    last_tensor: str
    file_size: int
    header_bytes: int  # how far the parse read: the header, KV section and tensor table


class _Reader:
    """Bounded little-endian reads over a buffer (a memory map of the file)."""

    def __init__(self, buffer: mmap.mmap, name: str) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 0
        self.name = name

    def truncated(self) -> ConfigError:
        return ConfigError(self.name, "model", "GGUF header is truncated")

    def scalar(self, fmt: struct.Struct) -> Any:
        end = self.pos + fmt.size
        if end > self.size:
            raise self.truncated()
        (value,) = fmt.unpack_from(self.buffer, self.pos)
        self.pos = end
        return value

    def string(self) -> str:
        length = self.scalar(_U64)
        if length > _MAX_STRING:
            raise ConfigError(self.name, "model", "GGUF header has an implausible string length")
        end = self.pos + length
        if end > self.size:
            raise self.truncated()
        text = self.buffer[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end
        return text

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            try:
                item = GGUFValueType(self.scalar(_U32))
            except ValueError as err:
                raise ConfigError(self.name, "model", "GGUF array has a bad item type") from err
            count = self.scalar(_U64)
            if count > _MAX_ARRAY_KEPT:
                self.skip_array(item, count)
                return None
            return [self.value(item) for _ in range(count)]
        return self.scalar(_SCALARS[vtype])

    def skip_array(self, item: GGUFValueType, count: int) -> None:
        if item in _SCALARS:
            self.pos += _SCALARS[item].size * count
        elif item == GGUFValueType.STRING:
            # Only the lengths are read: one 8-byte load per string, no decoding.
            buffer, pos, unpack = self.buffer, self.pos, _U64.unpack_from
            limit = self.size - 8
            for _ in range(count):
                if pos > limit:
                    raise self.truncated()
                pos += 8 + unpack(buffer, pos)[0]
            self.pos = pos
        else:
            for _ in range(count):
                self.value(item)
        if self.pos > self.size:
            raise self.truncated()


def _tensor_bytes(name: str, dims: list[int], ggml_type: int, source: str) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError) as err:
        raise ConfigError(
            source, "model", f"GGUF tensor {name!r} has unknown type {ggml_type}"
        ) from err
    elements = 1
    for dim in dims:
        elements *= dim
    return elements // block * type_size


def read_gguf(path: Path) -> GgufHeader:
    """The key/value section (large arrays left out as None) and the tensor table's extent."""
    name = str(path)
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise ConfigError(name, "model", "GGUF header is truncated")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                return _parse(_Reader(buffer, name), size)
    except OSError as err:
        raise ConfigError(name, "model", f"cannot read the model file: {err.strerror}") from err


def _parse(reader: _Reader, size: int) -> GgufHeader:
    name = reader.name
    if reader.scalar(_U32) != GGUF_MAGIC:
        raise ConfigError(name, "model", "not a GGUF file (bad magic)")
    version = reader.scalar(_U32)
    if version not in (2, 3):
        raise ConfigError(name, "model", f"unsupported GGUF version {version}")
    tensors = reader.scalar(_U64)
    count = reader.scalar(_U64)
    metadata: dict[str, Any] = {}
    for _ in range(count):
        key = reader.string()
        try:
            vtype = GGUFValueType(reader.scalar(_U32))
        except ValueError as err:
            raise ConfigError(name, "model", f"GGUF key {key}: bad type") from err
        metadata[key] = reader.value(vtype)
    total = 0
    end = 0
    last = ""
    for _ in range(tensors):
        tensor = reader.string()
        dims = [reader.scalar(_U64) for _ in range(reader.scalar(_U32))]
        ggml_type = reader.scalar(_U32)
        offset = reader.scalar(_U64)
        nbytes = _tensor_bytes(tensor, dims, ggml_type, name)
        total += nbytes
        if offset + nbytes >= end:
            end, last = offset + nbytes, tensor
    alignment = metadata.get("general.alignment")
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = _DEFAULT_ALIGNMENT
    data_start = -(-reader.pos // alignment) * alignment
    return GgufHeader(metadata, tensors, total, data_start + end, last, size, reader.pos)


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The key/value section of a GGUF file (large arrays left out as None)."""
    return read_gguf(path).metadata


def _first(value: Any) -> int | None:
    """head_count_kv may be a per-layer array; the fit uses the largest entry."""
    if isinstance(value, list):
        numbers = [v for v in value if isinstance(v, int)]
        return max(numbers) if numbers else None
    return value if isinstance(value, int) else None


def gguf_facts(path: Path) -> ModelFacts:
    header = read_gguf(path)
    if header.data_end > header.file_size:
        raise ConfigError(
            str(path),
            "model",
            f"GGUF tensor {header.last_tensor!r} data ends at byte {header.data_end}, beyond the "
            f"file's {header.file_size} bytes: the file is truncated or partly downloaded",
        )
    meta = header.metadata
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


def model_facts(instance: Instance, *, read_files: bool = True) -> ModelFacts:
    """Facts from the model files where they are readable, overridden by `modelInfo`.

    `read_files=False` (`check --static`, in the Nix sandbox): `modelInfo` only.
    """
    base = ModelFacts(source="")
    path = Path(instance.model) if instance.model.startswith("/") and read_files else None
    if path is not None and path.exists():
        if path.is_dir() and ((path / "config.json").exists() or instance.model_info is None):
            base = hf_facts(path)
        elif path.suffix == ".gguf":
            base = gguf_facts(path)
    if instance.model_info is not None:
        return _stated(instance.model_info, base)
    return base
