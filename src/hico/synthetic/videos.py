"""Synthetic videos for tests, demos and benchmarks (no download is ever possible here).

Every generated frame carries its own frame index as a row of black/white blocks along the top edge
(`read_frame_code`), so a test can decode any frame and check exactly which source frame it got.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

CODE_BITS = 18  # enough for 262,144 frames (2.4 hours at 30 fps)


def frame_with_code(index: int, width: int, height: int, bits: int = CODE_BITS) -> np.ndarray:
    """A (height, width, 3) uint8 frame: a scrolling gradient, a moving square and `index` as a block code."""
    x = np.arange(width, dtype=np.int32)
    y = np.arange(height, dtype=np.int32)[:, None]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = ((x + 2 * index) % 256).astype(np.uint8)
    frame[..., 1] = ((y + index) % 256).astype(np.uint8)
    frame[..., 2] = 96
    side = max(4, height // 5)
    left = (index * 3) % max(1, width - side)
    top = height // 2 - side // 2
    frame[top : top + side, left : left + side] = (230, 40, 40)
    _draw_code(frame, index, bits)
    return frame


def _code_geometry(width: int, height: int, bits: int) -> tuple[int, int]:
    return width // bits, max(4, height // 8)


def _draw_code(frame: np.ndarray, index: int, bits: int) -> None:
    height, width = frame.shape[:2]
    block, band = _code_geometry(width, height, bits)
    if block < 2:
        raise ValueError(f"a {width}-pixel-wide frame is too narrow for a {bits}-bit frame code")
    for bit in range(bits):
        on = (index >> (bits - 1 - bit)) & 1
        frame[:band, bit * block : (bit + 1) * block] = 255 if on else 0


def read_frame_code(frame: np.ndarray, bits: int = CODE_BITS) -> int:
    """Read back the index drawn by `frame_with_code` from a decoded (H, W, 3) RGB frame."""
    height, width = frame.shape[:2]
    block, band = _code_geometry(width, height, bits)
    value = 0
    for bit in range(bits):
        cell = frame[band // 4 : 3 * band // 4, bit * block + block // 4 : (bit + 1) * block - block // 4]
        value = (value << 1) | int(cell.mean() > 127)
    return value


def write_video(
    path: str | Path,
    num_frames: int,
    *,
    fps: float = 30.0,
    width: int = 160,
    height: int = 96,
    codec: str = "libx264",
    gop: int = 30,
    bits: int = CODE_BITS,
    rotation: int | None = None,
    frame_times: Sequence[float] | None = None,
    audio_seconds: float | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    frame_fn: Callable[[int], np.ndarray] | None = None,
    progress: bool = False,
) -> Path:
    """Encode a synthetic video whose frame i shows code i.

    `frame_times` (seconds, increasing) gives a variable frame rate; `rotation` writes a display matrix
    (counter-clockwise degrees); `audio_seconds` adds a silent AAC track. The container follows the suffix.
    `options` go to the encoder (e.g. preset), `container_options` to the muxer (e.g. movflags=+faststart).
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if options:
            stream.options = dict(options)
        if frame_times is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in tqdm(range(num_frames), desc=f"writing {path.name}", unit="frame", disable=not progress):
            pixels = frame_fn(i) if frame_fn is not None else frame_with_code(i, width, height, bits)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if frame_times is not None:
                frame.pts = round(frame_times[i] * 1000)
                frame.time_base = stream.time_base
            else:
                frame.pts = i
                frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_seconds is not None:
            _write_silence(container, audio_seconds)
    return path


def write_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An audio-only file (no video stream), for error-path tests."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        _write_silence(container, seconds)
    return path


def _write_silence(container: av.container.OutputContainer, seconds: float) -> None:
    sample_rate = 16000
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = "mono"
    samples = int(seconds * sample_rate)
    chunk = 1024
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, n), np.float32), format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_gif(path: str | Path, num_frames: int, *, width: int = 120, height: int = 80,
              frame_ms: int = 100, bits: int = 12) -> Path:
    """An animated GIF whose frame i shows code i (GIF stores per-frame delays, here `frame_ms`)."""
    path = Path(path)
    images = [Image.fromarray(frame_with_code(i, width, height, bits)) for i in range(num_frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def write_frame_folder(folder: str | Path, num_frames: int, *, width: int = 120, height: int = 80,
                       bits: int = 12, pattern: str = "img_{}.png") -> Path:
    """A folder of numbered frames (`img_1.png` ... written out of order on purpose), code i in frame i."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in reversed(range(num_frames)):
        Image.fromarray(frame_with_code(i, width, height, bits)).save(folder / pattern.format(i + 1))
    return folder


def sample_video(path: str | Path, seconds: float = 90.0, fps: float = 10.0) -> Path:
    """The demo clip: 640x360, `seconds` long, H.264."""
    return write_video(path, math.ceil(seconds * fps), fps=fps, width=640, height=360, gop=50, progress=True)


COLOURS = {"red": (230, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230), "yellow": (240, 220, 40)}
COLOUR_QUESTION = "What colour is the video?"


def write_colour_task(folder: str | Path, count: int = 16, size: int = 64) -> Path:
    """A learnable training task: `count` two-second videos of one solid colour, each asked its colour.

    Writes `folder/{i}.mp4` and `folder/data.json` (LLaVA-style conversations); returns the JSON path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    records = []
    for i in range(count):
        rgb = np.array(COLOURS[names[i % len(names)]], dtype=np.uint8)
        write_video(folder / f"{i}.mp4", 8, fps=4, width=size, height=size,
                    frame_fn=lambda _, rgb=rgb: np.broadcast_to(rgb, (size, size, 3)).copy())
        records.append({"video": f"{i}.mp4", "conversations": [
            {"from": "human", "value": f"<image>\n{COLOUR_QUESTION}"},
            {"from": "gpt", "value": names[i % len(names)]}]})
    (folder / "data.json").write_text(json.dumps(records))
    return folder / "data.json"
