"""Tiny random checkpoints in the official layout, for tests and benchmarks (no download is possible here).

`write_random_checkpoint(folder)` writes config.json (with a `vision_config` block sizing a small UMT),
model.safetensors under the official key names, and a small ChatML-aware tokenizer trained on the spot.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hico.checkpoint import HicoConfig, save_state_dict
from hico.clips import FRAMES_PER_CLIP
from hico.model import HicoModel

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_TEXT = [
    "You are a helpful assistant.",
    "The video lasts for 12.00 seconds, and 8 frames are uniformly sampled from it.",
    "What colour is the square? Which shape appears first? Answer with the option's letter.",
    "A red circle, a blue square, a green triangle, a yellow star. Options: (A) (B) (C) (D)",
    "system user assistant frame frames video seconds 0 1 2 3 4 5 6 7 8 9",
]


def tiny_official_config(*, vocab_size: int = 320, hidden_size: int = 64, layers: int = 4, heads: int = 4,
                         kv_heads: int = 2, vision_width: int = 64, vision_layers: int = 2, vision_heads: int = 4,
                         image_size: int = 64, patch_size: int = 8, tower: str = "umt-large",
                         dropout: dict | None = None) -> dict:
    """An official-layout config.json for a model small enough for CPU tests."""
    config = {
        "architectures": ["VideoChatFlashQwenForCausalLM"], "model_type": "videochat_flash_qwen",
        "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab_size,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 2, "use_sliding_window": False,
        "mm_vision_tower": tower, "mm_projector_type": "tome16_mlp_hd64", "mm_hidden_size": vision_width,
        "mm_vision_select_layer": -2, "mm_local_num_frames": FRAMES_PER_CLIP, "mm_newline_position": "nothing",
        "mm_patch_merge_type": "spatial_nopad", "mm_llm_compress": False, "llm_compress_type": "attention",
        "llm_compress_layer_list": [], "llm_image_token_ratio_list": [1.0],
        "vision_config": {"hidden_size": vision_width, "num_hidden_layers": vision_layers,
                          "num_attention_heads": vision_heads, "patch_size": patch_size, "image_size": image_size,
                          "num_frames": FRAMES_PER_CLIP},
    }
    if dropout:
        config.update(dropout)
    return config


def random_model(config: dict, seed: int = 0) -> HicoModel:
    """A HicoModel with seeded random weights (large enough values that layers matter)."""
    torch.manual_seed(seed)
    model = HicoModel(HicoConfig.from_official(config))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.08)
            elif "norm" in name or name.endswith("weight"):
                parameter.normal_(1.0, 0.05)
            else:
                parameter.normal_(0, 0.02)
    return model.eval()


def train_tokenizer(folder: str | Path, vocab_size: int = 320, texts: list[str] | None = None) -> None:
    """A byte-level BPE tokenizer with the ChatML special tokens at ids 0-2, trained on `texts` (default: a few
    lines of prompt text), saved in the transformers format for AutoTokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts or TOKENIZER_TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(str(folder))


def write_random_checkpoint(folder: str | Path, config: dict | None = None, seed: int = 0,
                            tokenizer: bool = True) -> HicoModel:
    """Write a random tiny checkpoint in the official layout; returns the model that was saved."""
    config = config or tiny_official_config()
    model = random_model(config, seed)
    save_state_dict(model.state_dict(), folder, config)
    if tokenizer:
        train_tokenizer(folder, config["vocab_size"])
    return model
