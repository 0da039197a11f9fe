"""The real-video corpus (tests/realvideo/fetch) and FFmpeg as the oracle for what its files contain.

The oracle runs Debian's `ffprobe` and `ffmpeg` command-line tools (never the PyAV that hico itself uses), each
as a plain decode of every frame of the first video stream in order, so a test compares hico against an
independent decode of the same file.
"""

from __future__ import annotations

import json
import math
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np


def realvideo_files(folder: Path, kind: str = "video") -> list[Path]:
    """The corpus files of one kind ("video": has a video stream, "novideo": none) listed in the manifest."""
    with open(folder / "manifest.tsv") as manifest:
        rows = [line.rstrip("\n").split("\t") for line in manifest][1:]
    return [folder / row[0] for row in rows if row[5] == kind]


def _ffprobe_json(path: Path, *args: str) -> dict:
    """ffprobe's JSON answer about the first video stream of `path` (`args` say which entries)."""
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", *args, "-of", "json", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout or "{}")


def _number(text: object) -> float | None:
    """A number that ffprobe printed as text, or None for a missing or "N/A" one."""
    try:
        value = float(Fraction(str(text)))
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def video_stream(path: Path) -> dict:
    """The first video stream as ffprobe reports it: codec_name, width, height, r_frame_rate, avg_frame_rate,
    nb_frames and side_data_list (the display rotation among them) as ffprobe spells them."""
    entries = "stream=codec_name,width,height,r_frame_rate,avg_frame_rate,nb_frames:stream_side_data=rotation"
    streams = _ffprobe_json(path, "-show_entries", entries).get("streams", [])
    if not streams:
        raise ValueError(f"{path}: ffprobe finds no video stream")
    return streams[0]


def rotation(path: Path) -> int:
    """The display rotation of the first video stream in degrees (0 when the file has none)."""
    for side_data in video_stream(path).get("side_data_list", []):
        if "rotation" in side_data:
            return int(side_data["rotation"])
    return 0


def display_size(path: Path) -> tuple[int, int]:
    """(width, height) of the frames ffmpeg outputs: the coded size, swapped for a rotation of +-90 degrees
    because ffmpeg applies the display rotation by default."""
    stream = video_stream(path)
    width, height = int(stream["width"]), int(stream["height"])
    return (height, width) if rotation(path) % 180 == 90 else (width, height)


def count_frames(path: Path) -> int:
    """How many frames ffprobe decodes from the first video stream (`-count_frames`' nb_read_frames)."""
    streams = _ffprobe_json(path, "-count_frames", "-show_entries", "stream=nb_read_frames").get("streams", [])
    return int(streams[0]["nb_read_frames"]) if streams else 0


def _fallback_gap(path: Path) -> float:
    """The frame period by the stream's declared rate (avg_frame_rate, else r_frame_rate), 0 when it has none."""
    stream = video_stream(path)
    for key in ("avg_frame_rate", "r_frame_rate"):
        rate = _number(stream.get(key))
        if rate:
            return 1.0 / rate
    return 0.0


def fill_times(times: list[float | None], fallback_gap: float = 0.0) -> np.ndarray:
    """Frame times with the missing ones (None) filled: the previous frame's time plus the median gap between
    frames whose times are known (`fallback_gap` when no two consecutive frames have one); missing times before
    the first known one count back from it the same way. Returned relative to the first frame (float64)."""
    known = np.array([t if t is not None else np.nan for t in times], dtype=np.float64)
    if known.size == 0:
        return known
    gaps = np.diff(known)
    gaps = gaps[np.isfinite(gaps)]
    gap = float(np.median(gaps)) if gaps.size else fallback_gap
    finite = np.flatnonzero(np.isfinite(known))
    first = int(finite[0]) if finite.size else 0
    filled = known.copy()
    if not finite.size:
        filled[0] = 0.0
    for i in range(first - 1, -1, -1):
        filled[i] = filled[i + 1] - gap
    for i in range(first + 1, len(filled)):
        if not np.isfinite(filled[i]):
            filled[i] = filled[i - 1] + gap
    return filled - filled[0]


def ffprobe_times(path: Path) -> np.ndarray:
    """One time per decoded frame of the first video stream, in decode-output order, in seconds relative to the
    first frame (float64): ffprobe's best-effort timestamps, a missing one filled by `fill_times` (when the file
    has too few timestamps to measure a gap, its declared frame rate gives it)."""
    frames = _ffprobe_json(path, "-show_entries", "frame=best_effort_timestamp_time").get("frames", [])
    times = [_number(frame.get("best_effort_timestamp_time")) for frame in frames]
    measurable = any(a is not None and b is not None for a, b in zip(times, times[1:]))
    return fill_times(times, 0.0 if measurable or len(times) < 2 else _fallback_gap(path))


def ffmpeg_rgb_frames(path: Path, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """The wanted frames (0-based: frame i is the i-th frame ffmpeg decodes from the first video stream, with
    every frame passed through, none dropped or duplicated) as height x width x 3 uint8 RGB arrays, display
    rotation applied as ffmpeg does by default. Streams ffmpeg's output, so only the wanted frames stay in memory;
    indices past the end are missing from the answer.

    Frames come as PPM images, each with its own size. `-flags unaligned` lets the decoder crop a frame to the
    stream's picture size exactly (a Theora picture 214 wide in a 224-wide frame: without it FFmpeg stops at
    218 to keep the rows aligned), as hico's reader asks too."""
    wanted = set(indices)
    # interl=-1: interlaced frames are converted field by field (their chroma belongs to one field), as the FFmpeg
    # inside PyAV does; Debian's 5.1 command line otherwise mixes the fields' chroma (39 dB on an SVCD); progressive
    # frames convert as before
    command = ["ffmpeg", "-nostdin", "-v", "error", "-flags", "unaligned", "-i", str(path), "-map", "0:v:0",
               "-fps_mode", "passthrough", "-vf", "scale=interl=-1", "-f", "image2pipe", "-c:v", "ppm",
               "-pix_fmt", "rgb24", "-"]
    frames: dict[int, np.ndarray] = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as ffmpeg:
        assert ffmpeg.stdout is not None
        index = 0
        while wanted - frames.keys():
            frame = _read_ppm(ffmpeg.stdout)
            if frame is None:
                break
            if index in wanted:
                frames[index] = frame.copy()
            index += 1
        ffmpeg.kill()
    return frames


def _read_ppm(stream) -> np.ndarray | None:
    """One binary PPM image (FFmpeg writes "P6\\n<width> <height>\\n255\\n", then the RGB rows); None at the end."""
    if not stream.readline().startswith(b"P6"):
        return None
    width, height = (int(v) for v in stream.readline().split())
    stream.readline()  # the maximum value, 255
    data = stream.read(width * height * 3)
    if len(data) < width * height * 3:
        return None
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images of one shape (inf when they are identical)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr of differently shaped images: {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
