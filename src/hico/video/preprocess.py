"""Frame preprocessing identical to the official UMT image processor.

Per frame: squash-resize (aspect ratio not kept, no crop or pad) to `size` x `size` with PIL bicubic on uint8,
scale by 1/255, normalise with the ImageNet mean and std, channels first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from hico.errors import HicoError

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZES = (224, 448)  # "umt-large" and "umt-hd-large"


def resize_frame(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, PIL bicubic squash as the official processor does."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))


def _lookup_table() -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level per channel, computed in float32 exactly
    as (v / 255 - mean) / std, so a table lookup gives the same numbers as the arithmetic."""
    levels = np.arange(256, dtype=np.float32) / np.float32(255)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None]
    return (levels[None, :] - mean) / std


_LEVELS = _lookup_table()


def normalize(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, S, S, 3) uint8 resized frames -> (T, 3, S, S) float32 `pixel_values`.

    A table lookup in numpy: no torch threads compete with the decoder for the cores while streaming.
    """
    import torch  # here, not at the top: the decode worker imports this module and must start fast

    frames = np.asarray(frames, dtype=np.uint8)
    out = np.empty((frames.shape[0], 3, *frames.shape[1:3]), dtype=np.float32)
    for channel in range(3):
        np.take(_LEVELS[channel], frames[..., channel], out=out[:, channel])
    return torch.from_numpy(out)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; a file PIL cannot read is a HicoError naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HicoError(f"{path}: cannot read the image ({exc}); replace the file or remove what refers to it") \
            from exc


def image_clip(image: np.ndarray, size: int, frames: int = 4) -> torch.Tensor:
    """One still image as a whole clip: (frames, 3, size, size), the image preprocessed on every frame."""
    return preprocess([image], size).expand(frames, -1, -1, -1).contiguous()


def preprocess(frames: Sequence[np.ndarray] | np.ndarray, size: int = 224) -> torch.Tensor:
    """RGB uint8 frames of any size -> (T, 3, size, size) float32, as the official `pixel_values`."""
    return normalize(np.stack([resize_frame(np.asarray(f, dtype=np.uint8), size) for f in frames]))
