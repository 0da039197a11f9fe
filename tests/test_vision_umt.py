"""UMT tower: the sinusoid table by hand, attention against a plain softmax formula, layer selection, 448 table."""

from __future__ import annotations

import math

import torch

from hico.vision.umt import Attention, UMTConfig, UMTEncoder, position_table, sinusoid_table

TINY = UMTConfig(hidden_size=32, num_layers=2, num_heads=4, patch_size=8, image_size=32)


def test_sinusoid_table_by_hand() -> None:
    table = sinusoid_table(5, 8)
    assert table.shape == (5, 8)
    assert abs(table[1, 0].item() - math.sin(1)) < 1e-7
    assert abs(table[1, 1].item() - math.cos(1)) < 1e-7
    assert abs(table[3, 2].item() - math.sin(3 / 10000 ** (2 / 8))) < 1e-7
    assert abs(table[4, 7].item() - math.cos(4 / 10000 ** (6 / 8))) < 1e-7


def test_hd_table_resizes_each_frame_from_14x14() -> None:
    config = UMTConfig(hidden_size=16, image_size=448, interpolate_positions=True)
    table = position_table(config, 4)
    assert table.shape == (1, 4 * 28 * 28, 16)
    plain = position_table(UMTConfig(hidden_size=16, image_size=224), 4)
    assert plain.shape == (1, 4 * 14 * 14, 16)
    assert torch.equal(plain[0], sinusoid_table(784, 16))
    # the four frames keep distinct tables after resizing (they start from positions 0, 196, 392, 588)
    frames = table[0].reshape(4, 784, 16)
    assert not torch.allclose(frames[0], frames[1])


def test_attention_matches_plain_formula() -> None:
    torch.manual_seed(0)
    attn = Attention(TINY)
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 10, 32)
    w = attn.qkv.weight
    q = x @ w[:32].T + attn.q_bias
    k = x @ w[32:64].T  # keys carry no bias
    v = x @ w[64:].T + attn.v_bias
    split = lambda t: t.reshape(2, 10, 4, 8).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ split(v)).transpose(1, 2).reshape(2, 10, 32))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_encoder_shapes_and_layer_count() -> None:
    encoder = UMTEncoder(TINY)
    assert len(encoder.blocks) == 2
    clips = torch.randn(3, 4, 3, 32, 32)
    assert encoder(clips).shape == (3, 4 * 16, 32)
    assert encoder(clips[:, :1]).shape == (3, 16, 32)  # an image uses the one-frame table
    assert not any("positions" in k for k in encoder.state_dict())
