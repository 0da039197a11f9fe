"""int8 weight-only LLM linears (torchao) and bfloat16 on a tiny random model: storage, closeness to float32,
and the video prefix staying exact in each precision."""

from __future__ import annotations

import copy

import pytest
import torch

from hico.compress import DropSchedule
from hico.errors import OptionError
from hico.model import IMAGE_TOKEN_INDEX
from hico.synthetic.checkpoints import random_model, tiny_official_config

pytest.importorskip("torchao", reason="`--quantize int8` needs torchao (the dev extra installs it)")

VISUAL = 48


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_official_config(layers=4, hidden_size=128, heads=4, kv_heads=2), seed=5)


def _prompt(model):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (16,), generator=generator)
    ids[5] = IMAGE_TOKEN_INDEX
    return ids, torch.randn(VISUAL, model.config.hidden_size, generator=generator)


def _logits(model, ids, visual, schedule=DropSchedule()):
    with torch.inference_mode():
        embeds, span = model.embed(ids, visual)
        return model.prefill(embeds, span, schedule).logits[0, -1].float()


def _relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _linear_bytes(model) -> int:
    total = 0
    for module in model.llm.modules():
        if isinstance(module, torch.nn.Linear):
            weight = module.weight
            inner = [getattr(weight, name) for name in getattr(weight, "__tensor_flatten__", lambda: ([], 0))()[0]]
            total += sum(t.numel() * t.element_size() for t in inner) or weight.numel() * weight.element_size()
    return total


def test_int8_stores_llm_linears_in_int8_and_stays_close_to_float32(model) -> None:
    from hico.quantize import quantize_llm

    ids, visual = _prompt(model)
    reference = _logits(model, ids, visual)
    quantized = copy.deepcopy(model)
    before = _linear_bytes(quantized)
    count = quantize_llm(quantized, "int8")
    assert count == 4 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the LM head (not tied here)
    weight = quantized.llm.model.layers[0].mlp.up_proj.weight
    assert weight.qdata.dtype == torch.int8 and weight.shape == model.llm.model.layers[0].mlp.up_proj.weight.shape
    assert _linear_bytes(quantized) < 0.3 * before  # int8 and one scale per row, against float32
    assert torch.equal(quantized.vision.state_dict()["blocks.0.attn.qkv.weight"],
                       model.vision.state_dict()["blocks.0.attn.qkv.weight"])  # the tower is not quantized
    assert _relative(_logits(quantized, ids, visual), reference) < 8e-2  # random weights: ~4% measured
    assert _relative(_logits(quantized, ids, visual), reference) > 0  # it did change the numbers


def test_tied_lm_head_is_left_to_the_embeddings() -> None:
    from hico.quantize import quantize_llm

    tied = random_model(tiny_official_config(layers=1) | {"tie_word_embeddings": True}, seed=1)
    tied.llm.lm_head.weight = tied.llm.model.embed_tokens.weight
    assert quantize_llm(tied, "int8") == 7
    assert tied.llm.lm_head.weight is tied.llm.model.embed_tokens.weight


def test_unknown_quantization_is_refused(model) -> None:
    from hico.quantize import quantize_llm

    with pytest.raises(OptionError, match="unknown quantization 'int4'"):
        quantize_llm(model, "int4")


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_prefix_reuse_is_exact_in_each_precision(model, precision) -> None:
    """Half precision and int8 change the numbers, but a kept prefix must not change them further."""
    from hico.quantize import quantize_llm

    variant = copy.deepcopy(model)
    if precision == "bfloat16":
        variant = variant.to(torch.bfloat16)
        variant.reset_buffers()
    else:
        quantize_llm(variant, "int8")
    ids, visual = _prompt(model)
    schedule = DropSchedule("uniform0_attention", (1, 2), (1.0, 0.5, 0.25))
    with torch.inference_mode():
        embeds, span = variant.embed(ids, visual)
        end = span.start + span.count
        full = variant.prefill(embeds, span, schedule).logits[0, -1].float()
        prefix = variant.prefill_prefix(embeds[:, :end], span, schedule)
        reused = variant.prefill_after(prefix, embeds[:, end:], schedule).logits[0, -1].float()
    tolerance = 1e-2 if precision == "bfloat16" else 1e-5  # bfloat16 rounds differently on other shapes
    assert _relative(reused, full) < tolerance
    assert _relative(full, _logits(model, ids, visual, schedule)) < 8e-2  # and both stay near float32


def test_load_quantized_answers_and_keeps_its_own_video_prefix(tmp_path) -> None:
    import hico
    from hico.generate import GenerationOptions
    from hico.memory import VideoMemory
    from hico.synthetic.checkpoints import write_random_checkpoint

    write_random_checkpoint(tmp_path / "tiny", seed=2)
    plain, quantized = hico.load(tmp_path / "tiny"), hico.load(tmp_path / "tiny", quantize="int8")
    assert (plain.variant, quantized.variant) == ("float32", "float32+int8")
    assert quantized.model.llm.model.layers[0].self_attn.q_proj.weight.qdata.dtype == torch.int8
    tokens = torch.randn(32, plain.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    memory = VideoMemory(tokens, [0, 1], [0.0, 1.0], "", 2.0, "random", key="")
    short = GenerationOptions(max_new_tokens=3)
    for model in (plain, quantized):
        assert isinstance(model.answer(memory, "What colour is the square?", options=short), str)
    assert len(memory.prefixes) == 2  # same weights, other numbers: the int8 model does not reuse float32's prefix
