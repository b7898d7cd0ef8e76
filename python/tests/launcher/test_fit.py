"""The VRAM fit against hand-computed cases, with facts from GGUF headers and config.json."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from hydra_fleet.core.errors import TemporaryError
from hydra_fleet.launcher import preflight
from hydra_fleet.launcher.gpu_probe import DriverInfo
from hydra_fleet.launcher.modelinfo import gguf_facts, model_facts
from tests.launcher.conftest import LLAMA3_70B_35, RTX4090, RTX5090, instance
from tests.launcher.fakes import FakeGpus, device

GIB = 1024**3


def operator(context: int) -> preflight.Preflight:
    inst = instance(
        engine="tabbyapi",
        model="/models/Llama-3-70B-exl2-3.5bpw",
        contextLength=context,
        gpus=[RTX5090, RTX4090],
        settings={"model": {"tensor_parallel": True}},
        modelInfo=LLAMA3_70B_35,
    )
    return preflight.run(inst, None)


def test_operator_70b_8k_fits() -> None:
    """70B at 3.5 bpw over 32 + 24 GB with TabbyAPI tensor parallel: 8K context fits."""
    pre = operator(8192)
    assert pre.fit.fits
    assert not [p for p in pre.fatal if "fit" in p]
    small = pre.fit.gpus[1]
    # weights 70.6e9 x 3.5 / 8 split evenly; KV 2 x 80 x 8 x 128 x 8192 x 2 B split evenly
    assert small.weights == 15_443_750_000
    assert small.kv == 1_342_177_280
    assert small.overhead == GIB + int(0.2 * 24 * GIB)
    assert small.need == 15_443_750_000 + 1_342_177_280 + GIB + int(0.2 * 24 * GIB)


def test_operator_70b_32k_refused_with_the_largest_context() -> None:
    """32K does not fit on the 24 GB card; the refusal names the largest context that does."""
    pre = operator(32768)
    assert not pre.fit.fits
    budget = 24 * GIB - GIB - int(0.2 * 24 * GIB)
    largest = int((budget * 2 - 70.6e9 * 3.5 / 8) / (2 * 80 * 8 * 128 * 2) // 256 * 256)
    assert pre.fit.largest_context == largest == 24832
    assert any("the largest context that fits is 24832" in p for p in pre.fatal)
    # ... and the knobs that make room, with their current values
    (refusal,) = [p for p in pre.fatal if "largest context" in p]
    assert "cacheType q8 or q4; now f16" in refusal
    assert "headroom; now 0.2" in refusal
    assert "RTX 4090 needs 25.18 GiB of 24.00 GiB" in pre.verdict
    with pytest.raises(preflight.RefusedError) as err:
        pre.enforce()
    assert err.value.exit_code == 78


def write_gguf(path: Path, layers: int, heads: int, kv_heads: int, embedding: int) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(131072)
    writer.add_embedding_length(embedding)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(5000)])
    writer.add_tensor("blk.0.w", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_header_facts(tmp_path: Path) -> None:
    """Layers, KV heads and head dim come from the GGUF header (head dim = embedding/heads)."""
    path = tmp_path / "m.gguf"
    write_gguf(path, layers=32, heads=32, kv_heads=8, embedding=4096)
    facts = gguf_facts(path)
    assert (facts.layers, facts.kv_heads, facts.head_dim) == (32, 8, 128)
    assert facts.max_context == 131072
    assert facts.weights_bytes == path.stat().st_size


def test_llama_cpp_fit_from_gguf_hand_computed(tmp_path: Path) -> None:
    """8B-like GGUF at 32K with q8 cache on one 16 GiB GPU: KV = 2x32x8x128x32768x34/32 B."""
    path = tmp_path / "m.gguf"
    write_gguf(path, layers=32, heads=32, kv_heads=8, embedding=4096)
    with path.open("r+b") as handle:  # sparse: pretend 8 GiB of weights
        handle.truncate(8 * GIB)
    gpu = {"vendor": "nvidia", "model": "RTX 5070 Ti", "vramGiB": 16, "arch": "sm_120", "index": 0}
    inst = instance(
        engine="llama-cpp", model=str(path), contextLength=32768, cacheType="q8", gpus=[gpu]
    )
    pre = preflight.run(inst, None)
    row = pre.fit.gpus[0]
    assert row.kv == 2 * 32 * 8 * 128 * 32768 * 34 // 32 == 2_281_701_376
    assert row.weights == 8 * GIB
    assert row.need == 8 * GIB + 2_281_701_376 + GIB + int(0.2 * 16 * GIB)
    assert pre.fit.fits


def test_exl2_config_json_and_safetensors(tmp_path: Path) -> None:
    """EXL2 directory: config.json gives the shape, the safetensors sizes give the weights."""
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 80,
                "num_attention_heads": 64,
                "num_key_value_heads": 8,
                "hidden_size": 8192,
                "max_position_embeddings": 8192,
                "quantization_config": {"quant_method": "exl2", "bits": 3.5},
            }
        )
    )
    for i in range(2):
        with (tmp_path / f"output-{i}.safetensors").open("wb") as handle:
            handle.truncate(3 * GIB)
    inst = instance(engine="tabbyapi", model=str(tmp_path), contextLength=4096, gpus=[RTX4090])
    facts = model_facts(inst)
    assert (facts.layers, facts.kv_heads, facts.head_dim) == (80, 8, 128)
    assert facts.weights_bytes == 6 * GIB
    assert facts.bits_per_weight == 3.5
    row = preflight.run(inst, None).fit.gpus[0]
    assert row.kv == 2 * 80 * 8 * 128 * 4096 * 2


def test_vllm_tensor_parallel_over_unequal_gpus_is_refused() -> None:
    """vLLM splits every tensor evenly: 32 + 24 GB is refused with exit 78 and the reason."""
    inst = instance(
        engine="vllm",
        model="/nonexistent",
        contextLength=8192,
        gpus=[RTX5090, RTX4090],
        modelInfo={**LLAMA3_70B_35, "bitsPerWeight": 4},
    )
    pre = preflight.run(inst, None)
    assert any("vLLM tensor parallel needs GPUs of equal memory" in p for p in pre.fatal)
    with pytest.raises(preflight.RefusedError):
        pre.enforce()


def test_held_memory_is_temporary() -> None:
    """Fits the card but another process holds the memory now: exit 75, not 78."""
    inst = instance(
        engine="llama-cpp",
        model="m",
        contextLength=4096,
        gpus=[RTX4090],
        modelInfo={"weightsBytes": 10 * GIB, "layers": 32, "kvHeads": 8, "headDim": 128},
    )
    gpus = FakeGpus([device(0, 32), device(1, 24, free_gib=8, uuid="GPU-4090")])
    pre = preflight.run(inst, gpus)
    assert pre.fit.fits
    assert not pre.fatal
    assert pre.temporary
    assert "held by other processes" in pre.temporary[0]
    with pytest.raises(TemporaryError) as err:
        pre.enforce()
    assert err.value.exit_code == 75


def test_gpu_visibility_retried_with_backoff_then_75() -> None:
    """A GPU that stays invisible is retried with growing delays, then reported as exit 75."""
    inst = instance(engine="command", command=["true"], gpus=[RTX4090])
    sleeps: list[float] = []
    gpus = FakeGpus([device(1, 24, uuid="GPU-4090")], unavailable_calls=100)
    pre = preflight.run(inst, gpus, wait=3.0, sleep=sleeps.append)
    assert pre.temporary
    assert "nvidia_uvm not loaded" in pre.temporary[0]
    assert sleeps == [0.5, 1.0, 1.5]


def test_gpu_visible_after_two_tries() -> None:
    """The driver comes up during the wait: the preflight passes."""
    inst = instance(engine="command", command=["true"], gpus=[RTX4090])
    gpus = FakeGpus([device(1, 24, uuid="GPU-4090")], unavailable_calls=2)
    pre = preflight.run(inst, gpus, wait=30.0, sleep=lambda _: None)
    assert not pre.temporary
    assert not pre.fatal
    assert gpus.calls == 3


def test_blackwell_needs_cuda_12_8() -> None:
    """An RTX 5090 with a driver that supports CUDA 12.6 is refused (78), naming the fix."""
    inst = instance(engine="command", command=["true"], gpus=[RTX5090])
    gpus = FakeGpus([device(0, 32, uuid="GPU-5090")], driver_=DriverInfo("560.35", (12, 6)))
    pre = preflight.run(inst, gpus)
    assert pre.fatal == [
        "gpus: RTX 5090 (sm_120, Blackwell) needs a driver with CUDA 12.8 or later (driver 570+); "
        "the loaded driver 560.35 supports CUDA 12.6"
    ]
