"""Frame preprocessing identical to the official UMT image processor.

Per frame: squash-resize (aspect ratio not kept, no crop or pad) to `size` x `size` with PIL bicubic on uint8,
scale by 1/255, normalise with the ImageNet mean and std, channels first.
"""

from __future__ import annotations

from collections.abc import Sequence

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

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


def normalize(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, S, S, 3) uint8 resized frames -> (T, 3, S, S) float32 `pixel_values`."""
    import torch  # here, not at the top: the decode worker imports this module and must start fast

    pixels = torch.as_tensor(frames).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std


def preprocess(frames: Sequence[np.ndarray] | np.ndarray, size: int = 224) -> torch.Tensor:
    """RGB uint8 frames of any size -> (T, 3, size, size) float32, as the official `pixel_values`."""
    return normalize(np.stack([resize_frame(np.asarray(f, dtype=np.uint8), size) for f in frames]))
