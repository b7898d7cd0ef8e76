"""The VRAM fit: weights + KV cache + overhead per GPU, against capacity and free memory.

need(GPU i) = share_i x (weights + KV) + overhead_i, where
  KV       = 2 x layers x kvHeads x headDim x tokens x bytes per element (cache type), and
             tokens = the engine's own count for the context (`Engine.kv_tokens`: llama.cpp
             and TabbyAPI pad it to 256, Ollama holds OLLAMA_NUM_PARALLEL of it),
  overhead = overheadBytes (CUDA context, allocator, compute buffers; 1 GiB by default)
             + headroom x capacity (fragmentation and activation peaks; 20 % by default),
  share_i  = the engine's split rule: tensor parallel (vLLM, TabbyAPI tensor_parallel) splits
             every layer evenly across ranks; a layer split (llama.cpp, Ollama, TabbyAPI
             without tensor parallel) is written by the launcher in proportion to what each
             GPU has left after its overhead.
vLLM reserves gpuMemoryUtilization x capacity on every rank and fits inside it (no headroom).
The split rule and the KV count belong to the engine objects (`engines/`); the largest context
offered never exceeds the model's trained context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hydra_fleet.launcher.config import GIB, Gpu, Instance
from hydra_fleet.launcher.engines import engine_for
from hydra_fleet.launcher.modelinfo import ModelFacts

DEFAULT_OVERHEAD = GIB
CONTEXT_STEP = 256

# Bytes per cached K or V element, scales included (ggml q8_0: 34 B / 32; q4_0: 18 B / 32;
# ExLlama Q6: 0.75 + fp16 scale per 32).
BYTES_PER_ELEMENT = {
    "f16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "q8": 34 / 32,
    "q6": 26 / 32,
    "q4": 18 / 32,
}


@dataclass(frozen=True)
class GpuFit:
    gpu: Gpu
    share: float
    weights: int
    kv: int
    overhead: int
    need: int
    capacity: int  # what the need must fit in (vLLM: utilization x memory)
    claim: int  # what the engine takes from the free memory when it starts
    free: int | None

    @property
    def fits_capacity(self) -> bool:
        return self.need <= self.capacity

    @property
    def fits_free(self) -> bool:
        return self.free is None or self.claim <= self.free


@dataclass(frozen=True)
class Fit:
    checked: bool
    context: int
    cache_type: str
    facts: ModelFacts
    rule: str
    overhead_note: str
    gpus: list[GpuFit] = field(default_factory=list)
    largest_context: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(g.fits_capacity for g in self.gpus) and not self.problems

    @property
    def fits_now(self) -> bool:
        return all(g.fits_free for g in self.gpus)

    @property
    def shares(self) -> list[float]:
        return [g.share for g in self.gpus]


def tensor_parallel(instance: Instance) -> bool:
    return engine_for(instance).tensor_parallel(instance)


def kv_bytes(facts: ModelFacts, context: int, cache_type: str, parallel: int = 1) -> int | None:
    per_token = facts.kv_bytes_per_token_elem
    if per_token is None:
        return None
    return math.ceil(per_token * context * BYTES_PER_ELEMENT[cache_type] * parallel)


def cached_tokens(instance: Instance) -> int:
    """The tokens the engine allocates KV for (its own padding and parallel sequences)."""
    return engine_for(instance).kv_tokens(instance)


def compute(
    instance: Instance,
    facts: ModelFacts,
    capacities: list[int],
    free: list[int | None],
) -> Fit:
    """The fit for `instance` on its GPUs; `capacities`/`free` are bytes, one per GPU."""
    context = instance.context_length or 0
    fixed = DEFAULT_OVERHEAD if instance.overhead_bytes is None else instance.overhead_bytes
    vllm = engine_for(instance).claims_utilization
    if vllm:
        note = (
            f"vLLM takes gpuMemoryUtilization {instance.gpu_memory_utilization:g} of each GPU; "
            f"weights + KV + {fixed / GIB:.2f} GiB (activations, CUDA graphs) must fit inside it"
        )
    else:
        note = (
            f"overhead per GPU = {fixed / GIB:.2f} GiB (CUDA context, allocator, compute buffers)"
            f" + {instance.headroom:.0%} of capacity (fragmentation, activation peaks)"
        )
    rule = "even (tensor parallel)" if tensor_parallel(instance) else "proportional (layer split)"
    base = Fit(
        checked=False,
        context=context,
        cache_type=instance.cache_type,
        facts=facts,
        rule=rule,
        overhead_note=note,
    )
    problems: list[str] = []
    if not instance.gpus or instance.engine == "command" or facts.weights_bytes is None:
        return Fit(**{**base.__dict__, "problems": problems})
    if vllm and len(set(capacities)) > 1:
        sizes = " + ".join(f"{c / GIB:.0f} GiB" for c in capacities)
        problems.append(
            f"gpus: vLLM tensor parallel needs GPUs of equal memory, got {sizes}: it splits every "
            "tensor evenly, so the smallest GPU bounds it; use TabbyAPI or llama.cpp, or one GPU"
        )
    n = len(instance.gpus)
    if vllm:
        budgets = [instance.gpu_memory_utilization * c - fixed for c in capacities]
        overheads = [fixed] * n
    else:
        overheads = [fixed + int(instance.headroom * c) for c in capacities]
        budgets = [c - o for c, o in zip(capacities, overheads, strict=True)]
    if tensor_parallel(instance):
        shares = [1 / n] * n
    else:
        positive = [max(b, 0.0) for b in budgets]
        total = sum(positive) or 1.0
        shares = [b / total for b in positive]
    weights = facts.weights_bytes
    tokens = cached_tokens(instance)
    kv = kv_bytes(facts, tokens, instance.cache_type) or 0
    if facts.kv_bytes_per_token_elem is None:
        problems.append(
            f"modelInfo: KV cache size unknown ({facts.source or 'no model facts'} lacks "
            "layers/kvHeads/headDim): set modelInfo"
        )
    rows = []
    for gpu, cap, fr, share, over in zip(
        instance.gpus, capacities, free, shares, overheads, strict=True
    ):
        w = math.ceil(weights * share)
        k = math.ceil(kv * share)
        need = w + k + over
        limit = int(instance.gpu_memory_utilization * cap) if vllm else cap
        rows.append(
            GpuFit(
                gpu=gpu,
                share=share,
                weights=w,
                kv=k,
                overhead=over,
                need=need,
                capacity=limit,
                claim=limit if vllm else need,
                free=fr,
            )
        )
    largest = _largest_context(instance, facts, budgets, shares)
    return Fit(
        checked=True,
        context=context,
        cache_type=instance.cache_type,
        facts=facts,
        rule=rule,
        overhead_note=note,
        gpus=rows,
        largest_context=largest,
        problems=problems,
    )


def _largest_context(
    instance: Instance, facts: ModelFacts, budgets: list[float], shares: list[float]
) -> int | None:
    """The largest context (a multiple of 256) whose need fits every GPU's capacity, and
    never more than the model's trained context."""
    per_token = facts.kv_bytes_per_token_elem
    if per_token is None or facts.weights_bytes is None:
        return None
    scale = cached_tokens(instance) / instance.context_length if instance.context_length else 1
    token_bytes = per_token * BYTES_PER_ELEMENT[instance.cache_type] * scale
    best = math.inf
    for budget, share in zip(budgets, shares, strict=True):
        if share <= 0:
            continue
        room = budget / share - facts.weights_bytes
        best = min(best, room / token_bytes)
    if facts.max_context:
        best = min(best, facts.max_context)
    if best == math.inf or best < CONTEXT_STEP:
        return 0
    if facts.max_context and best == facts.max_context:
        return facts.max_context
    return int(best // CONTEXT_STEP) * CONTEXT_STEP
