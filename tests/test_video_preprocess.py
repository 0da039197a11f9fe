"""Preprocessing against hand-computed values, transformers' image transforms, and the conformance fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hico.video.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize, preprocess, resize_frame

SHARED = Path(os.environ.get("HICO_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = sorted(p.parent for p in (SHARED / "conformance").glob("*/reference.safetensors"))


def _by_hand(value: int, channel: int) -> float:
    return (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]


def test_constant_frame_by_hand() -> None:
    frame = np.empty((60, 100, 3), np.uint8)
    frame[...] = (10, 200, 255)
    out = preprocess([frame], 224)
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    for channel, value in enumerate((10, 200, 255)):
        assert torch.allclose(out[0, channel], torch.tensor(_by_hand(value, channel)), atol=1e-6)


def test_frame_already_at_size_is_not_resampled() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = preprocess([frame], 224)[0]
    y, x, c = 17, 201, 2
    assert out[c, y, x].item() == pytest.approx(_by_hand(int(frame[y, x, c]), c), abs=1e-6)


def test_squash_resize_keeps_no_aspect_ratio() -> None:
    frame = np.zeros((100, 448, 3), np.uint8)
    frame[:, :224] = (255, 0, 0)
    frame[:, 224:] = (0, 0, 255)
    resized = resize_frame(frame, 224)
    assert resized.shape == (224, 224, 3)
    assert (resized == resized[:1]).all()  # a vertically uniform input stays uniform: no padding bands
    assert tuple(resized[0, 0]) == (255, 0, 0) and tuple(resized[0, -1]) == (0, 0, 255)


@pytest.mark.parametrize("size", [224, 448])
def test_matches_transformers_image_transforms(size: int) -> None:
    """The official UMT processor is transformers' resize (PIL bicubic) + rescale + normalize."""
    from transformers.image_transforms import normalize as hf_normalize
    from transformers.image_transforms import rescale, resize, to_channel_dimension_format
    from transformers.image_utils import ChannelDimension, PILImageResampling

    rng = np.random.default_rng(size)
    frames = [rng.integers(0, 256, (90 + 7 * i, 160 - 5 * i, 3), dtype=np.uint8) for i in range(3)]
    expected = []
    for frame in frames:
        image = resize(frame, (size, size), resample=PILImageResampling.BICUBIC, input_data_format=ChannelDimension.LAST)
        image = rescale(image, 1 / 255, input_data_format=ChannelDimension.LAST)
        image = hf_normalize(image, IMAGENET_MEAN, IMAGENET_STD, input_data_format=ChannelDimension.LAST)
        expected.append(to_channel_dimension_format(image, ChannelDimension.FIRST, ChannelDimension.LAST))
    expected = torch.from_numpy(np.stack(expected)).float()
    assert (preprocess(frames, size) - expected).abs().max().item() <= 1e-5


def test_normalize_accepts_tensors_and_arrays() -> None:
    frames = np.full((2, 16, 16, 3), 128, np.uint8)
    assert torch.equal(normalize(frames), normalize(torch.from_numpy(frames)))


@pytest.mark.skipif(not FIXTURES, reason=f"fixture missing: no model fixture folder under {SHARED / 'conformance'}")
@pytest.mark.parametrize("folder", FIXTURES, ids=lambda p: p.name)
def test_matches_conformance_pixel_values(folder: Path) -> None:
    from safetensors.torch import load_file

    reference = load_file(folder / "reference.safetensors")
    config = json.loads((folder / "config.json").read_text())
    size = config.get("vision_config", {}).get("image_size") or (448 if "umt-hd" in config["mm_vision_tower"] else 224)
    frames = reference["frames_uint8"].to(torch.uint8).numpy()
    ours = preprocess(list(frames), size)
    assert ours.shape == reference["pixel_values"].shape
    assert (ours - reference["pixel_values"].float()).abs().max().item() <= 1e-5
