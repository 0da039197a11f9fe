"""The UMT video ViT of VideoChat-Flash: joint space-time attention over each 4-frame clip.

Patches are 1x16x16 tubelets flattened in (t, h, w) order; a fixed sinusoid table (not a parameter) is added;
pre-norm blocks with q/v biases; only the blocks up to the selected layer are built, then a final LayerNorm.
At 448 the 224 position table is bicubic-interpolated per frame from 14x14 to 28x28, as the official code does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PRETRAIN_GRID = 14  # the position table was learned for 224 / 16 = 14 patches per side


@dataclass(frozen=True)
class UMTConfig:
    """UMT-L defaults; `num_layers` counts the blocks built (24 + select_layer(-2) + 1 = 23)."""

    hidden_size: int = 1024
    num_layers: int = 23
    num_heads: int = 16
    patch_size: int = 16
    image_size: int = 224
    num_frames: int = 4
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    final_norm_eps: float = 1e-12
    interpolate_positions: bool = False  # "umt-hd" towers: the 14x14 table resized to the grid

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid


def sinusoid_table(positions: int, width: int) -> torch.Tensor:
    """(positions, width) float32: sin on even dims, cos on odd dims, base 10000, computed in float64."""
    exponent = 2 * (np.arange(width) // 2) / width
    angles = np.arange(positions, dtype=np.float64)[:, None] / np.power(10000, exponent)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.tensor(angles, dtype=torch.float32)


def position_table(config: UMTConfig, frames: int) -> torch.Tensor:
    """(1, frames * grid^2, width): the sinusoid table, or for "umt-hd" the 14x14 one resized per frame."""
    width, grid = config.hidden_size, config.grid
    if not config.interpolate_positions:
        return sinusoid_table(frames * grid * grid, width)[None]
    table = sinusoid_table(frames * PRETRAIN_GRID**2, width)
    table = table.reshape(frames, PRETRAIN_GRID, PRETRAIN_GRID, width).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(grid, grid), mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(1, frames * grid * grid, width)


class PatchEmbed(nn.Module):
    """Each frame cut into p x p patches, one token per patch (both towers: key `patch_embed.proj`)."""

    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        p = patch_size
        self.proj = nn.Conv3d(3, width, kernel_size=(1, p, p), stride=(1, p, p))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        # (clips, frames, 3, S, S) -> (clips, frames * grid^2, width), tokens in (t, h, w) order
        return self.proj(clips.transpose(1, 2)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, count, width = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])  # keys have no bias
        qkv = F.linear(x, self.qkv.weight, bias).reshape(batch, count, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, count, width))


class Mlp(nn.Module):
    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.fc2 = nn.Linear(hidden, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UMTEncoder(nn.Module):
    """(clips, frames, 3, S, S) pixel values -> (clips, frames * grid^2, width) features."""

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.patch_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.vision_layernorm = nn.LayerNorm(config.hidden_size, eps=config.final_norm_eps)
        self.register_buffer("video_positions", position_table(config, config.num_frames), persistent=False)
        self.register_buffer("image_positions", position_table(config, 1), persistent=False)

    def reset_buffers(self, device: torch.device | str) -> None:
        self.video_positions = position_table(self.config, self.config.num_frames).to(device)
        self.image_positions = position_table(self.config, 1).to(device)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        frames = clips.shape[1]
        if frames not in (1, self.config.num_frames):
            raise ValueError(f"UMT encodes clips of {self.config.num_frames} frames or single images, got {frames}")
        x = self.patch_embed(clips)
        positions = self.video_positions if frames > 1 else self.image_positions
        x = x + positions.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.vision_layernorm(x)
