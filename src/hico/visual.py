"""The vision side of VideoChat-Flash without the LLM: tower (UMT or InternVideo2) -> clip-level merging -> MLP
projector, and the pixel normalisation of uint8 frames. `HicoModel` holds these parts beside transformers'
Qwen2; the vLLM plugin (`hico.vllm`) holds them beside vLLM's Qwen2, and imports nothing of transformers'
modeling code through this module.
"""

from __future__ import annotations

import torch
from torch import nn

from hico.checkpoint import HicoConfig
from hico.compress import merge_clip_tokens, pool_clip_tokens
from hico.vision.internvideo2 import InternVideo2Config, InternVideo2Encoder
from hico.vision.umt import UMTEncoder


class Projector(nn.Module):
    """The MLP of `tome16_mlp_hd64` (keys `mlp.0`, `mlp.2`); merging happens before it in `compress`."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens)


def build_tower(config: HicoConfig) -> nn.Module:
    """The configured video ViT, built up to the selected layer."""
    tower = InternVideo2Encoder if isinstance(config.vision, InternVideo2Config) else UMTEncoder
    return tower(config.vision)


def compress_clips(config: HicoConfig, features: torch.Tensor, frames: int) -> torch.Tensor:
    """(clips, frames * patches, C) tower features -> (clips, 64, C): ToMe merging, or pooling if configured."""
    if config.clip_compression == "pool":
        return pool_clip_tokens(features, frames, config.tokens_per_clip)
    return merge_clip_tokens(features, config.tokens_per_clip)


class VisualEncoder(nn.Module):
    """Tower, merge and projector under hico's parameter names (`vision.`, `projector.`, as in `HicoModel`)."""

    def __init__(self, config: HicoConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = build_tower(config)
        self.projector = Projector(config.mm_hidden_size, config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.mlp[0].weight.dtype

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(clips, frames, 3, S, S) pixel values -> (clips, 64, hidden) visual tokens in the official order."""
        features = self.vision(clips.to(device=self.projector.mlp[0].weight.device, dtype=self.dtype))
        return self.projector(compress_clips(self.config, features, clips.shape[1]))


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """(T, S, S, 3) uint8 resized frames -> (T, 3, S, S) float32 pixel values: the numbers of
    `hico.video.preprocess.normalize` ((v / 255 - mean) / std in float32), computed on the frames' device."""
    levels = torch.arange(256, dtype=torch.float32, device=frames.device) / 255
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=frames.device)[:, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=frames.device)[:, None]
    table = (levels[None, :] - mean) / std  # (3, 256)
    index = frames.to(torch.long).permute(0, 3, 1, 2)  # (T, 3, S, S)
    return torch.stack([table[channel][index[:, channel]] for channel in range(3)], dim=1)
