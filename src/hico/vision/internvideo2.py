"""The InternVideo2-1B video ViT of VideoChat-Flash-Qwen2_5-7B_InternVideo2-1B, as its official tower runs it.

Differences from UMT (`hico.vision.umt`), all visible in the checkpoint's keys: patch 14 (16 x 16 patches per
224 frame), a learned cls token and learned position tables (`pos_embed` for 4-frame clips, `img_pos_embed`
for single images), RMSNorm instead of LayerNorm, q and k RMS-normalised over the full width before the head
split, no qkv bias, LayerScale on both residual branches, and no final norm: the tower returns the raw output
of its last built block (blocks up to the selected layer, 40 - 2 + 1 = 39), cls token dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hico.vision.umt import PatchEmbed

OFFICIAL_MLP_RATIO = 48 / 11  # 1408 -> 6144


@dataclass(frozen=True)
class InternVideo2Config:
    """InternVideo2-1B defaults; `num_layers` counts the blocks built (40 + select_layer(-2) + 1 = 39)."""

    hidden_size: int = 1408
    num_layers: int = 39
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    num_frames: int = 4
    mlp_hidden_size: int = int(1408 * OFFICIAL_MLP_RATIO)
    norm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps), the normalisation computed in float32."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class LayerScale(nn.Module):
    """A learned per-channel factor on a residual branch, applied in float32 as the official one is."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.weight.float()).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: InternVideo2Config) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = RMSNorm(width, config.norm_eps)
        self.k_norm = RMSNorm(width, config.norm_eps)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, count, width = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (batch, count, width): normalised over the full width
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(batch, count, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, count, width))


class Mlp(nn.Module):
    def __init__(self, config: InternVideo2Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.mlp_hidden_size)
        self.fc2 = nn.Linear(config.mlp_hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: InternVideo2Config) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, config.norm_eps)
        self.attn = Attention(config)
        self.ls1 = LayerScale(config.hidden_size)
        self.norm2 = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = Mlp(config)
        self.ls2 = LayerScale(config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class InternVideo2Encoder(nn.Module):
    """(clips, frames, 3, S, S) pixel values -> (clips, frames * grid^2, width) features (cls token dropped)."""

    def __init__(self, config: InternVideo2Config) -> None:
        super().__init__()
        self.config = config
        width, tokens = config.hidden_size, config.tokens_per_frame
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_frames * tokens, width))
        self.img_pos_embed = nn.Parameter(torch.zeros(1, 1 + tokens, width))
        self.patch_embed = PatchEmbed(config.patch_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))

    def reset_buffers(self, device: torch.device | str) -> None:
        """Nothing to recompute: the position tables are weights of the checkpoint."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        frames = clips.shape[1]
        if frames not in (1, self.config.num_frames):
            raise ValueError(f"InternVideo2 encodes clips of {self.config.num_frames} frames or single images, "
                             f"got {frames}")
        x = self.patch_embed(clips)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = x + (self.pos_embed if frames > 1 else self.img_pos_embed).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x[:, 1:]
