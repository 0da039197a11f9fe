"""The memory plan of training (hico.train.plan) against counts and bytes worked out by hand."""

from __future__ import annotations

import pytest

from hico.errors import OptionError
from hico.train.plan import (GIB, checkpointed_activations, count_parameters, lora_parameters, memory_plan,
                             released_config, tower_checkpointed_activations)


def qwen2_parameters(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, inter: int) -> int:
    """Qwen2 by its shapes: embeddings and an untied LM head; per layer q/k/v with biases, o without, SwiGLU, norms."""
    kv = kv_heads * hidden // heads
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden
    return 2 * vocab * hidden + layers * (attention + 3 * hidden * inter + 2 * hidden) + hidden


def umt_parameters(width: int, blocks: int, patch: int) -> int:
    """UMT-L by its shapes: a tubelet patch embedding (1 x patch x patch), blocks of qkv without k bias (q and v
    biases), proj, two LayerNorms, a 4x MLP."""
    embed = 3 * patch * patch * width + width
    block = (3 * width * width + 2 * width) + (width * width + width) + 4 * width + (8 * width * width + 5 * width)
    return embed + blocks * block + 2 * width  # and the final LayerNorm


def test_released_7b_counts_match_the_shapes() -> None:
    counts = count_parameters(released_config("Qwen2-7B"))
    assert counts["llm"] == qwen2_parameters(152064, 3584, 28, 28, 4, 18944) == 7_615_616_512  # Qwen2-7B's count
    assert counts["vision"] == umt_parameters(1024, 23, 16)  # the released tower keeps 23 of 24 blocks
    assert counts["projector"] == (1024 * 3584 + 3584) + (3584 * 3584 + 3584)


def test_bytes_per_gpu_by_strategy() -> None:
    counts = {"vision": 100, "projector": 10, "llm": 1000}
    trained = ("projector", "llm")  # 1010 trained, 1110 in all
    assert memory_plan(counts, trained, "ddp", 4).total == 1110 * 4 + 1010 * 4 + 1010 * 8
    zero1 = memory_plan(counts, trained, "zero1", 4)
    assert (zero1.params, zero1.grads, zero1.optimizer) == (2220, 2020, 253 * 12)  # ceil(1010 / 4) = 253
    zero2 = memory_plan(counts, trained, "zero2", 4)
    assert (zero2.params, zero2.grads, zero2.optimizer) == (2220, 253 * 2, 253 * 12)
    zero3 = memory_plan(counts, trained, "zero3", 4)
    assert (zero3.params, zero3.grads, zero3.optimizer) == (278 * 2, 253 * 2, 253 * 12)
    fsdp = memory_plan(counts, trained, "fsdp", 4)
    assert (fsdp.params, fsdp.grads, fsdp.optimizer) == (278 * 4, 253 * 4, 253 * 8)
    lora = memory_plan(counts, ("llm",), "zero2", 1, lora_params=20)  # the base is frozen, only adapters train
    assert (lora.params, lora.grads, lora.optimizer) == (1130 * 2, 20 * 2, 20 * 12)
    lora_and_projector = memory_plan(counts, ("projector", "llm"), "ddp", 1, lora_params=20)  # projector whole
    assert (lora_and_projector.grads, lora_and_projector.optimizer) == (30 * 4, 30 * 8)


def test_sharding_over_more_gpus_never_costs_more() -> None:
    counts = count_parameters(released_config("Qwen2.5-1.5B"))
    for strategy in ("ddp", "fsdp", "zero1", "zero2", "zero3"):
        totals = [memory_plan(counts, ("vision", "projector", "llm"), strategy, n).total for n in (1, 8, 32)]
        assert totals == sorted(totals, reverse=True)
    # stage 3 of the 7B model does not fit one 80 GB GPU's worth under ZeRO-1 at 8 GPUs once activations count
    official = released_config("Qwen2-7B")
    zero1 = memory_plan(count_parameters(official), ("vision", "projector", "llm"), "zero1", 8).total
    assert 40 * GIB < zero1 < 41 * GIB
    assert checkpointed_activations(official, 32768) == 32768 * 3584 * 28 * 2
    assert tower_checkpointed_activations(official, 512) == 128 * (28 * 28 * 4) * 1024 * 23 * 2


def test_lora_parameters_and_bad_options() -> None:
    official = released_config("Qwen2-7B")
    assert lora_parameters(official, 16) == 28 * 16 * ((3584 + 3584) * 2 + (3584 + 512) * 2)
    with pytest.raises(OptionError, match="strategy"):
        memory_plan({"vision": 1, "projector": 1, "llm": 1}, ("llm",), "zero4", 8)
    with pytest.raises(OptionError, match="gpus"):
        memory_plan({"vision": 1, "projector": 1, "llm": 1}, ("llm",), "ddp", 0)
    with pytest.raises(OptionError, match="LoRA targets"):
        lora_parameters(official, 8, ("gate_proj",))


def test_train_plan_command(tmp_path) -> None:
    import subprocess
    import sys

    def hico(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hico.cli", "train-plan", *args], capture_output=True,
                              text=True, timeout=120)

    result = hico("--stage", "4", "--model", "7B", "--gpus", "8", "32")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[3:]}
    official = released_config("Qwen2-7B")
    counts = count_parameters(official)
    for strategy in ("ddp", "fsdp", "zero1", "zero2", "zero3"):
        expected = [memory_plan(counts, ("vision", "projector"), strategy, n).total / GIB for n in (8, 32)]
        assert [float(cell) for cell in rows[strategy]] == pytest.approx(expected, abs=0.05)
    missing = hico("--stage", "3", "--model", str(tmp_path))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no config.json" in missing.stderr
