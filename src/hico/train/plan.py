"""Memory per GPU of a training run, before renting the GPUs: parameters, gradients and optimizer states.

    plan = memory_plan(count_parameters(official_config), trained=("vision", "projector", "llm"),
                       strategy="zero3", gpus=32)

Parameters are counted exactly by building the model on the meta device (no memory, no weights). The bytes per
parameter follow what each engine keeps (AdamW, mixed precision as hico's Trainer runs it on GPUs):

- DeepSpeed ZeRO (bf16: the official scripts): every parameter in bf16 (2 bytes); a trained one also has a bf16
  gradient (2) and fp32 master weights, momentum and variance (12). Stage 1 shards the 12, stage 2 also the
  gradients, stage 3 also the parameters, each over the `gpus` data-parallel ranks.
- DDP and FSDP (torch autocast: parameters stay fp32): 4 bytes per parameter, and a trained one adds a fp32
  gradient (4) and momentum and variance (8). DDP replicates everything, FSDP full_shard shards everything.

Frozen parts (stage 4 freezes the LLM) cost only their parameter bytes. With LoRA the LLM's own weights are
frozen and its adapters (their count is given) are trained, beside any other part listed as trained. Not included: activations (they depend on the sequence length and
gradient checkpointing; `checkpointed_activations` gives the layer inputs that checkpointing keeps), the CUDA
context and allocator slack (about 1-3 GiB per GPU in practice), and DeepSpeed's communication buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hico.checkpoint import HicoConfig
from hico.errors import OptionError

PARTS = ("vision", "projector", "llm")
GIB = 1024**3


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter: each parameter, and a trained one's gradient and optimizer states."""

    param: int
    grad: int
    optimizer: int


ZERO = Precision(param=2, grad=2, optimizer=12)  # bf16 weights and gradients, fp32 master + Adam moments
AUTOCAST = Precision(param=4, grad=4, optimizer=8)  # fp32 weights and gradients, Adam moments


@dataclass(frozen=True)
class Strategy:
    precision: Precision
    shard_params: bool
    shard_grads: bool
    shard_optimizer: bool


STRATEGIES = {
    "ddp": Strategy(AUTOCAST, False, False, False),
    "fsdp": Strategy(AUTOCAST, True, True, True),  # full_shard
    "zero1": Strategy(ZERO, False, False, True),
    "zero2": Strategy(ZERO, False, True, True),
    "zero3": Strategy(ZERO, True, True, True),
}


@dataclass(frozen=True)
class MemoryPlan:
    strategy: str
    gpus: int
    params: int  # bytes per GPU
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer


def count_parameters(official: dict) -> dict[str, int]:
    """Parameters of each part (vision, projector, llm) of the model an official config.json describes."""
    with torch.device("meta"):
        from hico.model import HicoModel

        model = HicoModel(HicoConfig.from_official(official))
    return {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in PARTS}


def memory_plan(counts: dict[str, int], trained: tuple[str, ...], strategy: str, gpus: int,
                lora_params: int = 0, precision: Precision | None = None) -> MemoryPlan:
    """Bytes per GPU for parameters, gradients and optimizer states (see the module's docstring); `precision`
    replaces the strategy's own (float32 training on CPU keeps 4 + 4 + 8 bytes under every strategy)."""
    if strategy not in STRATEGIES:
        raise OptionError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if gpus < 1:
        raise OptionError(f"gpus must be at least 1, got {gpus}")
    if set(trained) - set(PARTS):
        raise OptionError(f"trained parts are among {PARTS}, got {list(trained)}")
    spec = STRATEGIES[strategy]
    total = sum(counts.values()) + lora_params
    # LoRA freezes the LLM's own weights and trains its adapters; other parts listed are trained whole
    trainable = lora_params + sum(counts[name] for name in trained if not (lora_params and name == "llm"))

    def share(n: int, sharded: bool) -> int:
        return -(-n // gpus) if sharded else n

    p = precision or spec.precision
    return MemoryPlan(strategy, gpus, params=share(total, spec.shard_params) * p.param,
                      grads=share(trainable, spec.shard_grads) * p.grad,
                      optimizer=share(trainable, spec.shard_optimizer) * p.optimizer)


def checkpointed_activations(official: dict, tokens: int, bytes_per_value: int = 2) -> int:
    """Bytes of the LLM layer inputs gradient checkpointing keeps for one sequence of `tokens` (bf16): a lower bound
    on activation memory per GPU (the layer being recomputed needs more while it runs)."""
    return tokens * official["hidden_size"] * official["num_hidden_layers"] * bytes_per_value


def tower_checkpointed_activations(official: dict, frames: int, bytes_per_value: int = 2) -> int:
    """Bytes of the tower's block inputs kept under gradient checkpointing when the tower is trained on `frames`
    frames (bf16): every 4-frame clip is (image / patch)^2 x 4 tokens wide through every block."""
    vision = HicoConfig.from_official(official).vision
    per_clip = (vision.image_size // vision.patch_size) ** 2 * vision.num_frames
    clips = -(-frames // vision.num_frames)
    return clips * per_clip * vision.hidden_size * vision.num_layers * bytes_per_value


def released_config(llm: str, image_size: int = 448) -> dict:
    """The official config.json of a released VideoChat-Flash model's shapes (UMT-L tower): "Qwen2-7B" (the 7B
    checkpoints) or "Qwen2.5-1.5B" (the 2B one). Values: ../shared/reference/official-system.md."""
    from hico.synthetic.checkpoints import tiny_official_config

    shapes = {"Qwen2-7B": dict(vocab_size=152064, hidden_size=3584, heads=28, kv_heads=4, intermediate=18944,
                               tie=False),
              "Qwen2.5-1.5B": dict(vocab_size=151936, hidden_size=1536, heads=12, kv_heads=2, intermediate=8960,
                                   tie=False)}  # the 2B checkpoint stores its own lm_head (4.14 GB file)
    if llm not in shapes:
        raise OptionError(f"unknown LLM {llm!r}; use one of {', '.join(shapes)}")
    s = shapes[llm]
    config = tiny_official_config(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"], layers=28,
                                  heads=s["heads"], kv_heads=s["kv_heads"], vision_width=1024, vision_layers=24,
                                  vision_heads=16, image_size=image_size, patch_size=16,
                                  tower="umt-hd-large" if image_size == 448 else "umt-large")
    config.update(intermediate_size=s["intermediate"], tie_word_embeddings=s["tie"], max_position_embeddings=32768)
    del config["vision_config"]  # the released configs have none: the tower's own sizes (23 of UMT-L's 24 blocks)
    return config


def lora_parameters(official: dict, rank: int, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                    ) -> int:
    """Adapter parameters LoRA adds to the LLM's attention projections: rank x (inputs + outputs) per layer."""
    hidden, heads = official["hidden_size"], official["num_attention_heads"]
    kv = official.get("num_key_value_heads", heads) * hidden // heads
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (hidden, hidden)}
    unknown = set(targets) - set(shapes)
    if unknown:
        raise OptionError(f"unknown LoRA targets {sorted(unknown)}; use among {', '.join(shapes)}")
    return official["num_hidden_layers"] * sum(rank * (a + b) for a, b in (shapes[t] for t in targets))
