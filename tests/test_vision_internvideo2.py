"""InternVideo2 tower: the block by hand (RMSNorm, full-width q/k norm, LayerScale), cls and position tables,
no final norm, and channel order (the iv2-tiny fixture's frames are grey, so colour is checked here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hico
from hico.synthetic.checkpoints import tiny_official_config, write_random_checkpoint
from hico.vision.internvideo2 import Block, InternVideo2Config, InternVideo2Encoder

TINY = InternVideo2Config(hidden_size=32, num_layers=2, num_heads=4, patch_size=8, image_size=32, mlp_hidden_size=40)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as the official processors use


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(1.0 if parameter.dim() == 1 else 0.0, 0.3)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return weight * x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


@torch.no_grad()
def test_block_matches_the_formula_written_out() -> None:
    block = Block(TINY)
    _randomise(block)
    x = torch.randn(2, 5, 32)
    attn = block.attn
    h = _rms(x, block.norm1.weight)
    q, k, v = (h @ w.T for w in attn.qkv.weight.chunk(3))
    q, k = _rms(q, attn.q_norm.weight), _rms(k, attn.k_norm.weight)  # over all 32 channels, before the heads
    heads = [slice(8 * i, 8 * i + 8) for i in range(4)]
    out = torch.cat([torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 8 ** 0.5, -1) @ v[..., s]
                     for s in heads], -1)
    x1 = x + block.ls1.weight * (out @ attn.proj.weight.T + attn.proj.bias)
    h = _rms(x1, block.norm2.weight)
    mlp = torch.nn.functional.gelu(h @ block.mlp.fc1.weight.T + block.mlp.fc1.bias) @ block.mlp.fc2.weight.T
    expected = x1 + block.ls2.weight * (mlp + block.mlp.fc2.bias)
    assert torch.allclose(block(x), expected, atol=1e-5)


@torch.no_grad()
def test_cls_token_is_dropped_and_video_and_image_tables_differ() -> None:
    tower = InternVideo2Encoder(TINY)
    _randomise(tower, seed=1)
    clips = torch.randn(3, 4, 3, 32, 32)
    features = tower(clips)
    assert features.shape == (3, 4 * 16, 32)
    # the last block's raw output: recomputed by hand from the embeddings, the cls row in front, then dropped
    x = tower.patch_embed(clips)
    x = torch.cat([tower.cls_token.expand(3, -1, -1), x], 1) + tower.pos_embed
    for block in tower.blocks:
        x = block(x)
    assert torch.equal(features, x[:, 1:])
    image = tower(clips[:, :1])
    assert image.shape == (3, 16, 32)
    tower.img_pos_embed.zero_()
    assert not torch.allclose(image, tower(clips[:, :1]))
    with pytest.raises(ValueError, match="clips of 4 frames or single images"):
        tower(clips[:, :3])


@torch.no_grad()
def test_colour_reaches_the_patch_embedding_in_rgb_order(tmp_path) -> None:
    """A frame of three constant channels (R 255, G 128, B 0) must arrive as the UMT/official processor
    normalises it, channel 0 = red, and the patch embedding must weigh channel c with its kernel's slice c."""
    raw = tiny_official_config(tower="internvideo2")
    raw["vision_config"] = {"embed_dim": 64, "depth": 1, "num_heads": 4, "patch_size": 14, "img_size": 56,
                            "num_frames": 4, "mlp_hidden_dim": 100}
    write_random_checkpoint(tmp_path / "iv2", raw, tokenizer=False)
    model = hico.load(tmp_path / "iv2")
    frame = np.zeros((30, 40, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1] = 255, 128
    seen = {}
    embed = model.model.vision.patch_embed
    handle = embed.register_forward_hook(lambda module, args, out: seen.update(pixels=args[0], tokens=out))
    model.encode_images([frame])
    handle.remove()
    pixels = seen["pixels"]
    assert pixels.shape == (1, 4, 3, 56, 56)
    expected = [(value / 255 - mean) / std for value, mean, std in zip((255, 128, 0), MEAN, STD)]
    for channel in range(3):
        assert torch.allclose(pixels[0, :, channel], torch.tensor(expected[channel]), atol=1e-5)
    weight, bias = embed.proj.weight, embed.proj.bias  # (64, 3, 1, 14, 14)
    by_hand = bias + sum(expected[c] * weight[:, c].sum((-1, -2, -3)) for c in range(3))
    assert torch.allclose(seen["tokens"][0, 0], by_hand, atol=1e-4)
