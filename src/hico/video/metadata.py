"""Open a video input and describe it: metadata plus a frame table (timestamps and keyframes) for planning.

Inputs are media files read with PyAV (bundled FFmpeg; GIF included) or folders of numbered frames.
The frame table comes from demuxing every packet without decoding: an exact frame count, each frame's
presentation timestamp, and where the keyframes are, which the decoder needs to choose between seeking
and one forward pass.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hico.errors import (
    NoDecodableFramesError,
    NotAMediaFileError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoNotFoundError,
    VideoPermissionError,
)

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_TRAILING_NUMBER = re.compile(r"(\d+)(?=\.[^.]+$)")
FOLDER_FPS = 1.0  # the official reader's rate for frame folders (it uses 3.0 for paths containing "tvqa")


@dataclass(frozen=True)
class VideoInfo:
    """What a video is. Times in seconds; `rotation` is the display rotation, counter-clockwise degrees."""

    path: str
    kind: str  # "file" or "frames" (a folder of numbered images)
    container: str
    codec: str
    width: int
    height: int
    rotation: int
    fps: float  # average frame rate
    num_frames: int
    frame_count: str  # "counted" (every packet demuxed), "header" (container says) or "estimated"
    duration: float
    keyframes: int | None
    variable_frame_rate: bool
    notes: tuple[str, ...] = ()

    @property
    def num_frames_exact(self) -> bool:
        return self.frame_count != "estimated"


@dataclass(frozen=True)
class FrameTable:
    """Per-frame facts in presentation order: timestamps (seconds from the first frame) and keyframe indices."""

    times: np.ndarray  # (num_frames,) float64 seconds
    keyframes: np.ndarray  # (k,) int64 frame indices, ascending; empty when unknown
    pts: np.ndarray | None = None  # (num_frames,) int64 stream pts; None when the file has no usable pts
    time_base: Fraction = Fraction(1, 1)
    seekable: bool = True
    files: tuple[str, ...] = field(default=())  # frame folders: the image of each frame

    @property
    def num_frames(self) -> int:
        return len(self.times)


def open_error(path: str | Path, exc: BaseException) -> Exception:
    """Translate an exception from opening `path` into the error type a user should see."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, FileNotFoundError) or code == errno.ENOENT:
        return VideoNotFoundError(path, "no such file or folder", "Check the path and the working directory")
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return VideoPermissionError(path, "permission denied while opening it",
                                    "Make the file readable for this user (chmod +r) or copy it somewhere readable")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return NotAMediaFileError(path, f"not a media file FFmpeg can read ({reason})",
                              "Check that it is a complete video file; a truncated download or a file of another "
                              "type cannot be opened")


def probe(path: str | Path, folder_fps: float = FOLDER_FPS, on_progress=None) -> tuple[VideoInfo, FrameTable]:
    """Describe a video file or a frame folder. Raises a `VideoError` subclass for unusable inputs.

    `on_progress(packets_read)` is called while the packets are scanned (the worker uses it as a heartbeat).
    """
    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(path, "no such file or folder", "Check the path and the working directory")
    if path.is_dir():
        return probe_folder(path, folder_fps)
    if not os.access(path, os.R_OK):
        raise open_error(path, PermissionError(errno.EACCES, "permission denied"))
    if path.stat().st_size == 0:
        raise NotAMediaFileError(path, "is empty (0 bytes)", "The file was not written completely; use a complete copy")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as exc:  # PyAV raises many FFmpeg error types; all mean "cannot open"
        raise open_error(path, exc) from exc
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(path, f"has no video stream (streams: {', '.join(kinds)})",
                                     "Pass a file that contains video; audio-only files cannot be used")
        stream = container.streams.video[0]
        codec = _decoder_name(path, stream)
        table, scan_note = _scan(container, stream, on_progress)
        rotation, first_note = _first_frame_rotation(path)
        notes = tuple(n for n in (scan_note, first_note) if n)
        fps = _average_fps(stream, table)
        header_frames = stream.frames or 0
        truncated = bool(header_frames and header_frames > table.num_frames)
        if truncated:
            notes += (f"the container lists {header_frames} frames but only {table.num_frames} could be read: "
                      "the file is probably truncated",)
        gaps = np.diff(table.times)
        # Timestamps are whole ticks of the time base: a constant rate that is not a whole number of ticks
        # (30 fps in WebM's 1 ms ticks: 33, 33, 34 ms) jitters by one tick without being variable.
        tick = float(table.time_base) if table.pts is not None else 0.0
        vfr = bool(len(gaps) > 1 and gaps.max() - gaps.min() > max(0.01 * max(gaps.mean(), 1e-9), 1.5 * tick))
        info = VideoInfo(
            path=str(path), kind="file", container=container.format.name, codec=codec,
            width=stream.codec_context.width, height=stream.codec_context.height, rotation=rotation, fps=fps,
            num_frames=table.num_frames, frame_count="counted",
            duration=_duration(stream, table, fps, truncated or bool(scan_note)),
            keyframes=len(table.keyframes), variable_frame_rate=vfr, notes=notes)
    return info, table


def _decoder_name(path: Path, stream: av.video.stream.VideoStream) -> str:
    name = stream.codec_context.name if stream.codec_context is not None else None
    if not name or name == "none":
        raise UnsupportedCodecError(path, "its video codec is not supported by the bundled FFmpeg",
                                    "Re-encode it to H.264 (for example: ffmpeg -i IN -c:v libx264 OUT.mp4)")
    try:
        av.codec.Codec(name, "r")
    except Exception as exc:
        raise UnsupportedCodecError(path, f"no decoder for its video codec {name!r} in the bundled FFmpeg",
                                    "Re-encode it to H.264 (for example: ffmpeg -i IN -c:v libx264 OUT.mp4)") from exc
    return name


def _scan(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
          on_progress=None) -> tuple[FrameTable, str]:
    """Demux every packet (no decoding) to count frames and find timestamps and keyframes."""
    stamps: list[int | None] = []
    keys: list[bool] = []
    note = ""
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
            keys.append(packet.is_keyframe)
            if on_progress is not None and len(stamps) % 1024 == 0:
                on_progress(len(stamps))
    except av.error.FFmpegError as exc:
        note = f"reading stopped at packet {len(stamps)} ({exc}); frames after it are not used"
    path = container.name
    if not stamps:
        raise NoDecodableFramesError(path, "contains a video stream but no video frames",
                                     "The file is empty or cut before its first frame; use a complete file")
    tb = stream.time_base or Fraction(1, 1)
    has_pts = all(s is not None for s in stamps)
    if has_pts:
        raw = np.asarray(stamps, dtype=np.int64)
        order = np.argsort(raw, kind="stable")
        pts = raw[order]
        unique = bool(np.all(np.diff(pts) > 0))
        key_positions = np.flatnonzero(np.asarray(keys)[order]).astype(np.int64)
        times = (pts - pts[0]).astype(np.float64) * float(tb)
        seekable = unique and container.format.name != "gif"  # GIF frames draw over the previous canvas
        if not unique:
            note = note or "the file repeats frame timestamps; it is read front to back without seeking"
        return FrameTable(times=times, keyframes=key_positions, pts=pts if unique else None, time_base=tb,
                          seekable=seekable), note
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    times = np.arange(len(stamps), dtype=np.float64) / fps
    note = note or "the file has no frame timestamps; times assume a constant frame rate"
    return FrameTable(times=times, keyframes=np.zeros(0, np.int64), pts=None, time_base=tb, seekable=False), note


def _first_frame_rotation(path: Path) -> tuple[int, str]:
    """The display rotation travels as frame side data, so it is read from the first decoded frame."""
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return int(round((frame.rotation or 0) / 90.0)) * 90 % 360, ""
    except av.error.FFmpegError as exc:
        return 0, f"the first frame does not decode ({exc})"
    return 0, "no frame decoded while probing"


def _average_fps(stream: av.video.stream.VideoStream, table: FrameTable) -> float:
    rate = stream.average_rate
    if rate and float(rate) > 0:
        return float(rate)
    span = table.times[-1] if table.num_frames > 1 else 0.0
    if span > 0:
        return (table.num_frames - 1) / span
    return float(stream.guessed_rate or 1.0)


def _duration(stream: av.video.stream.VideoStream, table: FrameTable, fps: float, cut: bool) -> float:
    """The stream's duration, or, when its data stops early, the span of the frames that can be read."""
    if cut:
        return float(table.times[-1]) + 1 / fps
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return table.num_frames / fps


def probe_folder(path: Path, fps: float = FOLDER_FPS) -> tuple[VideoInfo, FrameTable]:
    """A folder of frames, ordered by the number at the end of each name (img_2.jpg before img_10.jpg)."""
    from PIL import Image

    numbered = []
    for entry in path.iterdir():
        match = _TRAILING_NUMBER.search(entry.name)
        if entry.is_file() and entry.suffix.lower() in FRAME_SUFFIXES and match:
            numbered.append((int(match.group(1)), entry.name))
    if not numbered:
        raise NotAMediaFileError(path, "is a folder without numbered frames (like frame_0001.jpg)",
                                 f"Pass a video file, or a folder of {'/'.join(FRAME_SUFFIXES)} images whose names "
                                 "end in the frame number")
    numbered.sort()
    files = tuple(str(path / name) for _, name in numbered)
    try:
        with Image.open(files[0]) as first:
            width, height = first.size
    except (OSError, Image.DecompressionBombError) as exc:  # a bomb declares billions of pixels
        raise NoDecodableFramesError(path, f"its first frame {numbered[0][1]} is not a readable image ({exc})",
                                     "Replace or remove the broken image") from exc
    count = len(files)
    table = FrameTable(times=np.arange(count, dtype=np.float64) / fps, keyframes=np.arange(count, dtype=np.int64),
                       files=files)
    info = VideoInfo(path=str(path), kind="frames", container="folder", codec="image", width=width, height=height,
                     rotation=0, fps=fps, num_frames=count, frame_count="counted", duration=count / fps,
                     keyframes=count, variable_frame_rate=False,
                     notes=(f"frame folders carry no timing; {fps:g} fps is assumed (set folder_fps to change it)",))
    return info, table
