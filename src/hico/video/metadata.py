"""Open a video input and describe it: metadata plus a frame table (timestamps and keyframes) for planning.

Inputs are media files read with PyAV (bundled FFmpeg; GIF included) or folders of numbered frames.
Frame n is the n-th frame a plain decode of the file in order gives (what FFmpeg's command line outputs), at its
presentation time from the first frame. The frame table comes from demuxing every packet without decoding (the
count, the times, where the keyframes are, which the decoder needs to choose between seeking and one forward
pass), checked against the first decoded frames: whether frames can be known by their timestamps or only by
their order. `count_frames` decodes every frame instead, for files whose decoder drops frames.
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import closing
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

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


def probe(path: str | Path, folder_fps: float = FOLDER_FPS, on_progress=None,
          count_frames: bool = False) -> tuple[VideoInfo, FrameTable]:
    """Describe a video file or a frame folder. Raises a `VideoError` subclass for unusable inputs.

    The frame table comes from the packets (no decoding beyond the first frames): exact for intact files. With
    `count_frames` every frame is decoded, as `ffprobe -count_frames` does, so that frames a damaged file's
    decoder drops are not counted (frame_count "decoded"). `on_progress(count)` is called while packets are
    scanned or frames decoded (the worker uses it as a heartbeat).
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
        stream = video_stream(container)
        codec = _decoder_name(path, stream)
        scan = _scan(container, stream, on_progress)
    table, timing_note = _frame_table(scan)
    run = None
    if count_frames:  # one decode of every frame gives the rotation and the timestamp check too
        run = _decode_all(path, on_progress)
        rotation, first_note = run.rotation, ""
        verified = _pts_verified(table, run.pts[:VERIFY_FRAMES])
    else:
        rotation, verified, ended, first_note = _first_frames(path, table)
        if ended:
            # a short file was decoded to its end while probing and gave fewer frames than packets (a GIF trailer,
            # a packet without a picture): take the decoder's frames, as count_frames does
            run = _decode_all(path, on_progress)
    if table.pts is not None and not verified:
        # the decoder's timestamps are not the packets' (a muxer that wrote pts = dts for reordered frames):
        # frames are then told apart by their order from the start of the stream, which a plain decode defines
        table = replace(table, pts=None, seekable=False)
        timing_note = timing_note or ("the decoder's frame timestamps disagree with the container's; frames are "
                                      "read front to back")
    if run is not None:
        table, decode_note = _decoded_table(table, run)
        timing_note = decode_note or timing_note
    end = _end_time(scan, table)
    declared = scan.declared_duration
    truncated = bool(scan.error or (declared is not None and end < declared - max(1.0, 0.05 * declared)))
    notes = tuple(n for n in (scan.error, timing_note, first_note) if n)
    if truncated:
        what = f"{scan.declared_frames} frames, " if scan.declared_frames else ""
        notes += (f"the container announces {what}{declared or 0:.2f} s but the data stops after "
                  f"{table.num_frames} frames at {end:.2f} s: the file is probably truncated",)
    variable = _is_variable(table)
    fps = table.num_frames / end if variable else _average_fps(scan, table, end)
    info = VideoInfo(
        path=str(path), kind="file", container=scan.container, codec=codec, width=scan.width, height=scan.height,
        rotation=rotation, fps=fps, num_frames=table.num_frames,
        frame_count="decoded" if run is not None else "counted", duration=end,
        keyframes=len(table.keyframes), variable_frame_rate=variable, notes=notes)
    return info, table


@dataclass(frozen=True)
class _Scan:
    """What demuxing every packet of the video stream (without decoding) tells."""

    container: str
    width: int
    height: int
    pts: list[int | None]  # per packet with data, in decode order
    dts: list[int | None]
    keys: list[bool]
    durations: list[int]  # packet durations in time-base ticks (0 when unknown)
    time_base: Fraction
    average_rate: float | None  # the container's average frame rate
    codec_rate: float | None  # the codec's own frame rate (elementary streams carry only this)
    declared_frames: int  # the container's frame count (0 when it has none)
    declared_duration: float | None  # seconds of video the container announces
    start: float | None  # the stream's start time, seconds
    error: str  # why reading stopped early ("" when it reached the end)
    seekable_format: bool
    timestamps: bool  # False for elementary streams (.m1v, .m2v, .h264): the format has no timing of its own


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video: the first video stream that is not an attached picture (cover art in MP4 or Matroska is a
    one-frame video stream, sometimes the first one), else the first video stream."""
    streams = container.streams.video
    moving = [s for s in streams if not s.disposition & av.stream.Disposition.attached_pic]
    return (moving or list(streams))[0]


FRAME_THREAD_PIXELS = 3840 * 2160  # above 4K UHD, frame threads (one frame each in flight) cost too much memory


def thread_type(stream: av.video.stream.VideoStream) -> str:
    """FFmpeg's threading for a stream: frames and slices in parallel ("AUTO", FFmpeg's default), or slices only
    for frames larger than 4K UHD, where each frame thread holds frames of its own (a 4096x4096 HuffYUV AVI:
    750 MiB with frame threads, 310 MiB with slices)."""
    context = stream.codec_context
    return "SLICE" if context.width * context.height > FRAME_THREAD_PIXELS else "AUTO"


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


def _rate(value) -> float | None:
    return float(value) if value and float(value) > 0 else None


def _scan(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
          on_progress=None) -> _Scan:
    """Demux every packet (no decoding): its timestamps, keyframe flag and duration."""
    pts: list[int | None] = []
    dts: list[int | None] = []
    keys: list[bool] = []
    durations: list[int] = []
    error = ""
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                # an empty packet is a dropped frame (AVI) or the demuxer's end marker; a discarded one is decoded
                # only as a reference for later frames and never shown (an MP4 edit list that starts mid-GOP)
                continue
            pts.append(packet.pts)
            dts.append(packet.dts)
            keys.append(packet.is_keyframe)
            durations.append(packet.duration or 0)
            if on_progress is not None and len(pts) % 1024 == 0:
                on_progress(len(pts))
    except av.error.FFmpegError as exc:
        error = f"reading stopped at packet {len(pts)} ({exc}); frames after it are not used"
    if not pts:
        raise NoDecodableFramesError(container.name, "contains a video stream but no video frames",
                                     "The file is empty or cut before its first frame; use a complete file")
    tb = stream.time_base or Fraction(1, 1)
    context = stream.codec_context
    declared = float(stream.duration * tb) if stream.duration and stream.time_base else None
    return _Scan(container=container.format.name, width=context.width, height=context.height, pts=pts, dts=dts,
                 keys=keys, durations=durations, time_base=tb, average_rate=_rate(stream.average_rate),
                 codec_rate=_rate(context.framerate), declared_frames=stream.frames or 0,
                 declared_duration=declared, start=float(stream.start_time * tb) if stream.start_time is not None
                 else None, error=error, seekable_format=_seekable_format(container.format),
                 timestamps=not container.format.flags & NO_TIMESTAMPS)


def _frame_table(scan: _Scan) -> tuple[FrameTable, str]:
    """Each frame's presentation time, from the best timestamps the packets carry.

    - every packet has a distinct pts: the frames' times are the sorted pts (in AVI, which stores only frame
      slots, the slots), and a decoded frame is known by its pts (so seeking and skipping are possible);
    - otherwise (AVI with packed B-frames carries pts on some packets only) the decode timestamps, which step
      through the frame slots in order, give the times, and a frame is known by its place in decoding order;
    - neither (elementary streams): a constant rate, the codec's own where the container has none.
    """
    keys = np.asarray(scan.keys)
    tb = scan.time_base
    if scan.timestamps and all(p is not None for p in scan.pts):
        raw = np.asarray(scan.pts, dtype=np.int64)
        order = np.argsort(raw, kind="stable")
        pts = raw[order]
        if bool(np.all(np.diff(pts) > 0)):
            times = (pts - pts[0]).astype(np.float64) * float(tb)
            slots = np.asarray(scan.dts if scan.container in SLOT_FORMATS and None not in scan.dts else [],
                               dtype=np.int64)
            if len(slots) and bool(np.all(np.diff(slots) > 0)):
                times = (slots - slots[0]).astype(np.float64) * float(tb)  # the container's own times
            key_positions = np.flatnonzero(keys[order]).astype(np.int64)
            return FrameTable(times=times, keyframes=key_positions, pts=pts, time_base=tb,
                              seekable=scan.seekable_format), ""
    key_positions = np.flatnonzero(keys).astype(np.int64)
    if scan.timestamps and all(d is not None for d in scan.dts):
        raw = np.asarray(scan.dts, dtype=np.int64)
        if bool(np.all(np.diff(raw) > 0)):
            times = (raw - raw[0]).astype(np.float64) * float(tb)
            return FrameTable(times=times, keyframes=key_positions, pts=None, time_base=tb, seekable=False), \
                "not every frame carries a presentation timestamp; times come from the decoding timestamps"
    fps = scan.codec_rate or scan.average_rate or 25.0
    source = "the codec's" if scan.codec_rate else "the container's" if scan.average_rate else "an assumed"
    what = "the file has no usable frame timestamps" if scan.timestamps else "an elementary stream has no timing"
    times = np.arange(len(scan.pts), dtype=np.float64) / fps
    return FrameTable(times=times, keyframes=key_positions, pts=None, time_base=tb, seekable=False), \
        f"{what}; times follow {source} frame rate ({fps:g} fps)"


# Containers that store no presentation times, only each packet's slot in decoding order (AVI's index): the pts
# a demuxer hands out there are its guesses (newer FFmpeg adds the decoder delay), so times come from the slots.
SLOT_FORMATS = frozenset({"avi"})
NO_TIMESTAMPS = 0x80  # FFmpeg's AVFMT_NOTIMESTAMPS: the format carries no timestamps (elementary streams)
TS_DISCONT = 0x200  # FFmpeg's AVFMT_TS_DISCONT: timestamps may jump (MPEG program and transport streams)


def _seekable_format(fmt) -> bool:
    """Whether a seek lands where the frame table says. Formats with an index (MP4, Matroska, AVI, ...) seek to the
    keyframe asked for. MPEG program/transport streams have none: a seek bisects on timestamps, which may jump,
    and can land mid-GOP, where the decoder hands out frames built without their references; GIF frames draw
    over the previous canvas. Those are read front to back."""
    return fmt.name != "gif" and not fmt.flags & TS_DISCONT
VERIFY_FRAMES = 24  # frames decoded while probing to check that the decoder's timestamps are the table's


def _first_frames(path: Path, table: FrameTable) -> tuple[int, bool, bool, str]:
    """Decode the first frames in order: the display rotation (frame side data); whether the decoder's frame
    timestamps are the table's pts, in order, so that a decoded frame can be known by its pts; and whether the
    decoder ran out before giving as many frames as the table has packets.

    Muxers that write pts = dts for streams with reordered frames make the decoder hand out timestamps out of
    order; frames are then known by their place in decoding order instead. A damaged first frame the decoder
    drops does not count against the timestamps (the ones that come must still be the table's, in order).
    """
    rotation, seen, note, ended = 0, [], "", False
    wanted = min(VERIFY_FRAMES, table.num_frames)
    try:
        with closing(_frames_in_order(path)) as frames:
            for frame in frames:
                rotation = rotation if seen else _rotation(frame)
                seen.append(frame.pts)
                if len(seen) >= wanted:
                    break
            else:
                ended = len(seen) < wanted
    except av.error.FFmpegError as exc:
        note = f"the first frames do not decode ({exc})"
    if not seen:
        return 0, False, False, note or "no frame decoded while probing"
    return rotation, _pts_verified(table, seen), ended, note


def _pts_verified(table: FrameTable, seen: list[int | None]) -> bool:
    """Whether the decoder's first frame timestamps are rows of the table's pts, strictly increasing."""
    if table.pts is None or not seen or any(p is None for p in seen):
        return False
    stamps = np.asarray(seen, dtype=np.int64)
    rows = np.minimum(np.searchsorted(table.pts, stamps), len(table.pts) - 1)
    return bool(np.all(table.pts[rows] == stamps) and np.all(np.diff(stamps) > 0))


def _frames_in_order(path: Path):
    """Every frame of the video stream in decoding order; a packet the decoder rejects is skipped, as FFmpeg's
    command line does."""
    with av.open(str(path)) as container:
        stream = video_stream(container)
        stream.thread_type = thread_type(stream)
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            yield from frames


def _rotation(frame: av.VideoFrame) -> int:
    """The display rotation a frame carries (side data), in counter-clockwise degrees, a multiple of 90."""
    return int(round((frame.rotation or 0) / 90.0)) * 90 % 360


@dataclass(frozen=True)
class _DecodeRun:
    """What a plain decode of every frame in order saw: each frame's pts and FFmpeg's best-effort time."""

    pts: list[int | None]
    best: list[int | None]
    rotation: int
    corrupt: int  # frames the decoder repaired by error concealment


def _decode_all(path: Path, on_progress=None) -> _DecodeRun:
    """Decode every frame in order (no RGB conversion), as `ffprobe -count_frames` does."""
    stamps, best, corrupt, rotation = [], [], 0, 0
    clock = BestEffortClock()
    for frame in _frames_in_order(path):
        rotation = rotation if stamps else _rotation(frame)
        stamps.append(frame.pts)
        best.append(clock(frame.pts, frame.dts))
        corrupt += bool(frame.is_corrupt)
        if on_progress is not None and len(stamps) % 256 == 0:
            on_progress(len(stamps))
    if not stamps:
        raise NoDecodableFramesError(path, "none of its frames could be decoded",
                                     "The video data is damaged; re-encode or re-download it")
    return _DecodeRun(stamps, best, rotation, corrupt)


def _decoded_table(table: FrameTable, run: _DecodeRun) -> tuple[FrameTable, str]:
    """The frame table of a plain decode of every frame in order (what FFmpeg's command line outputs).

    Frames known by pts keep the rows whose frames came out; frames known by order keep the packets' times when
    the decoder gave one frame per packet, else take FFmpeg's best-effort timestamps (`BestEffortClock`).
    """
    note = f"{run.corrupt} frames were repaired by the decoder's error concealment" if run.corrupt else ""
    count = len(run.pts)
    lost = f"the decoder gave {count} frames for {table.num_frames} packets" if count != table.num_frames else ""
    notes = "; ".join(n for n in (lost, note) if n)
    if table.pts is not None:
        keep = np.isin(table.pts, np.asarray([p for p in run.pts if p is not None], dtype=np.int64))
        rows = np.flatnonzero(keep)
        keys = np.flatnonzero(np.isin(np.arange(table.num_frames), table.keyframes)[rows]).astype(np.int64)
        return replace(table, times=table.times[rows] - table.times[rows[0]], pts=table.pts[rows],
                       keyframes=keys), notes
    if count == table.num_frames:
        return table, notes
    ticks = _fill_missing(run.best)
    times = (ticks - ticks[0]).astype(np.float64) * float(table.time_base)
    return replace(table, times=times), notes


class BestEffortClock:
    """FFmpeg's best-effort frame timestamp: the decoder's pts, unless pts have gone backwards more often than
    the packets' decoding timestamps, then those."""

    def __init__(self) -> None:
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


def _fill_missing(ticks: list[int | None]) -> np.ndarray:
    """Timestamps with the gaps filled: a frame without one comes a typical step after the previous frame."""
    known = [t for t in ticks if t is not None]
    step = int(np.median(np.diff(known))) if len(known) > 1 else 1
    out, previous = [], None
    for t in ticks:
        t = t if t is not None else (previous + step if previous is not None else 0)
        out.append(t)
        previous = t
    return np.asarray(out, dtype=np.int64)


def _end_time(scan: _Scan, table: FrameTable) -> float:
    """Seconds from the first frame to the end of the last one: the stream's declared end where it falls within the
    last frame (an edit list may cut that frame short), else the last packet's duration, else the typical gap."""
    last = float(table.times[-1])
    step = 0.0
    if table.pts is not None:
        step = scan.durations[scan.pts.index(int(table.pts[-1]))] * float(table.time_base)
    if not step:
        gaps = np.diff(table.times)
        rate = scan.average_rate or scan.codec_rate
        step = float(np.median(gaps)) if len(gaps) else (1.0 / rate if rate else 0.0)
    # (formats without an index, MPEG program streams, only estimate their duration from the bit rate)
    if table.pts is not None and scan.seekable_format and scan.declared_duration is not None and scan.start is not None:
        declared = scan.declared_duration + scan.start - float(table.pts[0] * table.time_base)
        if last < declared < last + step:
            return declared
    return last + step


def _average_fps(scan: _Scan, table: FrameTable, end: float) -> float:
    """The container's average rate (what the official reader takes) where it agrees with the frames' times, else
    the codec's (elementary streams: the raw demuxer assumes 25 fps), else frames per second of the span."""
    measured = table.num_frames / end if end > 0 else None
    for rate in (scan.average_rate, scan.codec_rate):
        if rate and (measured is None or abs(rate - measured) <= 0.02 * measured):
            return rate
    return measured or scan.average_rate or scan.codec_rate or 1.0


def _is_variable(table: FrameTable) -> bool:
    """Whether the frames stray from an even grid by more than timestamp rounding explains.

    Timestamps are whole ticks of the time base and muxers often round to milliseconds, so a constant rate
    jitters by a tick or a millisecond; a dropped or held frame moves later frames by a whole frame period.
    """
    n = table.num_frames
    if n < 3:
        return False
    span = float(table.times[-1] - table.times[0])
    period = span / (n - 1)
    grid = table.times[0] + period * np.arange(n)
    tick = float(table.time_base) if table.pts is not None else 0.0
    return bool(np.abs(table.times - grid).max() > max(0.25 * period, 1.5 * tick, 0.002))


def probe_folder(path: Path, fps: float = FOLDER_FPS) -> tuple[VideoInfo, FrameTable]:
    """A folder of frames, ordered by the number at the end of each name (img_2.jpg before img_10.jpg)."""
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
