"""Decode chosen frames, choosing between seeking and one forward pass from the keyframe table.

Decoding frame t costs decoding from a keyframe at or before t. Before each target frame the planner
compares two ways to get there: keep decoding forward from the last decoded frame, or seek to the keyframe
just before the target. Seeking pays when it skips more frames than a seek costs, i.e. when samples are
sparse relative to keyframes; with a sample in (almost) every GOP the plan becomes one forward pass. Either
way, only the wanted frames are converted to RGB, and frames that are neither wanted nor referenced by
other frames (most B-frames) are not decoded at all (FFmpeg's skip_frame=NONREF, set packet by packet).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import av
import numpy as np
from PIL import Image

from hico.errors import OptionError
from hico.video.metadata import FrameTable, thread_type, video_stream
from hico.video.preprocess import resize_frame

SEEK_COST_FRAMES = 8  # a seek (demuxer reposition + decoder flush + thread pipeline refill) in decoded frames
CONVERT_AHEAD = 4  # frames converted and resized on a helper thread while the decoder goes on
CONVERT_BYTES = 128 << 20  # ... and no more than this many bytes of RGB frames (fewer for very large frames)
STRATEGIES = ("auto", "seek", "sequential")
# Decoders that give a frame its own packet's timestamp when other packets are skipped (skip_frame=NONREF), proven
# on the real-video corpus. Not MPEG-1/2: there the timestamps of skipped packets shift onto later frames.
SKIP_FRAME_CODECS = frozenset({"h264"})


@dataclass(frozen=True)
class AccessPlan:
    """For each target frame, whether to seek to its keyframe first; `strategy` summarises the plan."""

    targets: tuple[int, ...]
    seek_before: tuple[bool, ...]
    strategy: str  # "seek", "sequential" or "mixed"
    frames_to_decode: int  # estimate: frames the decoder runs through


@dataclass
class DecodeStats:
    strategy: str = ""
    decoded: int = 0  # frames out of the decoder
    converted: int = 0  # frames converted to RGB (the wanted ones)
    seeks: int = 0
    errors: int = 0  # packets the decoder rejected
    concealed: int = 0  # wanted frames the decoder flagged as corrupt (repaired by error concealment)
    unplaced: int = 0  # decoded frames whose timestamp matches no frame of the table (dropped)
    missing: list[int] = field(default_factory=list)  # targets that could not be decoded


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    pixels: np.ndarray | None  # (H, W, 3) uint8 RGB; None when the frame could not be decoded
    reason: str = ""
    concealed: bool = False  # the decoder flagged it corrupt and repaired it by error concealment (kept, as FFmpeg does)


def plan_access(table: FrameTable, targets: Sequence[int], strategy: str = "auto") -> AccessPlan:
    """Decide where to seek. `targets` are ascending unique frame indices."""
    if strategy not in STRATEGIES:
        raise OptionError(f"unknown decode strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    targets = tuple(int(t) for t in targets)
    keys = table.keyframes
    if not table.seekable or len(keys) == 0 or not targets:
        last = targets[-1] + 1 if targets else 0
        return AccessPlan(targets, (False,) * len(targets), "sequential", last)
    ranks = np.searchsorted(keys, np.asarray(targets), side="right") - 1
    # a frame before the first keyframe (an edit list that starts mid-GOP) is reached from the start of the file
    key_of = np.where(ranks >= 0, keys[np.maximum(ranks, 0)], 0)
    position = -1  # last frame decoded
    seek_before, work = [], 0
    for target, key in zip(targets, key_of.tolist()):
        skipped = key - position - 1  # frames a seek to `key` avoids decoding
        first = position < 0 and key > 0
        if strategy == "seek":
            seek = key > position
        elif strategy == "sequential":
            seek = first
        else:
            seek = first or skipped > SEEK_COST_FRAMES
        work += target - (key if seek else position + 1) + 1
        seek_before.append(seek)
        position = target
    seeks = sum(seek_before)
    summary = "sequential" if seeks <= 1 else "seek" if seeks >= 0.9 * (len(targets) - 1) else "mixed"
    return AccessPlan(targets, tuple(seek_before), summary, work)


def decode_file(path: str, table: FrameTable, targets: Sequence[int], *, size: int | None = None,
                autorotate: bool = True, strategy: str = "auto", stats: DecodeStats | None = None,
                on_progress=None) -> Iterator[DecodedFrame]:
    """Yield each target frame of a media file in ascending order, resized to `size` x `size` if given.

    Frames the decoder cannot produce (corrupt or truncated data) come back with `pixels=None`. Colour
    conversion and resizing run on a helper thread (they release the GIL), overlapping the decoding of the
    next frames; at most CONVERT_AHEAD frames wait there.
    """
    stats = stats if stats is not None else DecodeStats()
    plan = plan_access(table, targets, strategy)
    stats.strategy = plan.strategy
    with av.open(path) as container, ThreadPoolExecutor(1) as converter:
        stream = video_stream(container)
        stream.thread_type = thread_type(stream)
        # crop frames to the stream's picture size exactly (a Theora picture 214 wide in a 224-wide frame would
        # otherwise keep 4 columns of padding to stay row-aligned)
        stream.codec_context.flags |= av.codec.context.Flags.unaligned
        ahead = max(1, min(CONVERT_AHEAD, CONVERT_BYTES // max(1, 3 * stream.codec_context.width *
                                                               stream.codec_context.height)))
        skipping = table.pts is not None and stream.codec_context.name in SKIP_FRAME_CODECS
        wanted = {int(table.pts[t]) for t in plan.targets} if skipping else None
        cursor = _Cursor(container, stream, table, stats, on_progress, wanted)
        waiting: deque[tuple[int, Future | None, bool]] = deque()
        for target, seek in zip(plan.targets, plan.seek_before):
            if seek:
                cursor.seek_before(target)
            frame = cursor.get(target)
            if frame is None:
                stats.missing.append(target)
                waiting.append((target, None, False))
            else:
                stats.converted += 1
                stats.concealed += int(frame.is_corrupt)
                waiting.append((target, converter.submit(_to_rgb, frame, size, autorotate), bool(frame.is_corrupt)))
            while len(waiting) > ahead:
                yield _collect(*waiting.popleft())
        while waiting:
            yield _collect(*waiting.popleft())


def _collect(target: int, conversion: Future | None, concealed: bool) -> DecodedFrame:
    if conversion is None:
        return DecodedFrame(target, None, "no decodable frame at this position")
    return DecodedFrame(target, conversion.result(), concealed=concealed)


class _Cursor:
    """A position in the decoded frame sequence that can seek and push one frame back."""

    def __init__(self, container, stream, table: FrameTable, stats: DecodeStats, on_progress=None,
                 wanted: set[int] | None = None) -> None:
        self.container, self.stream, self.table, self.stats = container, stream, table, stats
        self.on_progress = on_progress
        self.wanted = wanted
        self.frames = _frames(container, stream, table, stats, on_progress, wanted)
        self.pending: tuple[int, av.VideoFrame] | None = None
        self.just_seeked = False

    def seek_before(self, target: int, earlier: int = 0) -> None:
        """Seek to the keyframe at or before `target`, or `earlier` keyframes before that (-1: file start)."""
        keys = self.table.keyframes
        rank = int(np.searchsorted(keys, target, side="right") - 1) - earlier
        offset = int(self.table.pts[keys[rank]]) if rank >= 0 and earlier >= 0 else 0
        self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
        self.stats.seeks += 1
        self.frames = _frames(self.container, self.stream, self.table, self.stats, self.on_progress, self.wanted)
        self.pending = None
        self.just_seeked = True

    def get(self, target: int) -> av.VideoFrame | None:
        """Decode forward to `target`. None if the target cannot be decoded (the next frame is kept).

        A seek that lands after the target, or where no frame comes before the end (an imprecise container
        index), is retried from earlier keyframes, then from the start of the file.
        """
        retries = 0
        while True:
            item, self.pending = self.pending, None
            item = item or next(self.frames, None)
            if item is not None and item[0] <= target:
                self.just_seeked = False  # the seek landed at or before the target
                if item[0] < target:
                    continue
                return item[1]
            if self.just_seeked and retries < 3:
                retries += 1
                self.seek_before(target, earlier=retries if retries < 3 else -1)
                continue
            self.just_seeked = False
            self.pending = item
            return None


def _frames(container, stream, table: FrameTable, stats: DecodeStats, on_progress=None,
            wanted: set[int] | None = None) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decoded frames with their frame index, from the current demux position; bad packets are skipped.

    A frame is known by its pts where the probe found the decoder's timestamps to be the table's (`table.pts`),
    else by its place in decoding order from the start of the stream, which is what a plain decode (FFmpeg's
    command line) defines as frame n: such tables are never seeked. With `wanted` (the pts of the target frames),
    packets of other frames are decoded with skip_frame=NONREF: the decoder drops them if no other frame refers to
    them, which loses no wanted frame because the wanted ones are known by pts. A frame whose pts is missing,
    unknown or not after the previous frame's cannot be placed: it is counted in `stats.unplaced` and dropped.
    `on_progress(stats)` is called for every decoded frame (the worker uses it as a heartbeat).
    """
    counter = -1
    last_pts = None
    context = stream.codec_context
    by_pts = table.pts is not None
    for packet in container.demux(stream):
        if wanted is not None:
            context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:
            stats.errors += 1
            continue
        for frame in decoded:
            stats.decoded += 1
            if on_progress is not None:
                on_progress(stats)
            if not by_pts:
                counter += 1
                yield counter, frame
                continue
            index = -1 if frame.pts is None else int(np.searchsorted(table.pts, frame.pts))
            if index < 0 or index >= len(table.pts) or table.pts[index] != frame.pts or \
                    (last_pts is not None and frame.pts <= last_pts):
                stats.unplaced += 1  # past a read error, or a timestamp out of order: its position is unknown
                continue
            last_pts = frame.pts
            yield index, frame


def _to_rgb(frame: av.VideoFrame, size: int | None, autorotate: bool) -> np.ndarray:
    # one swscale thread: the conversion already runs beside the decoder, and PyAV's default (threaded
    # conversion) costs a dozen context switches a frame on 2 cores for identical pixels
    rgb = frame.to_ndarray(format="rgb24", threads=1)
    if autorotate and frame.rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=round(frame.rotation / 90) % 4))
    return resize_frame(rgb, size) if size else rgb


def decode_folder(table: FrameTable, targets: Sequence[int], *, size: int | None = None,
                  stats: DecodeStats | None = None) -> Iterator[DecodedFrame]:
    """Yield target frames of a frame folder; an unreadable image comes back with `pixels=None`."""
    stats = stats if stats is not None else DecodeStats()
    stats.strategy = "seek"
    for target in targets:
        try:
            with Image.open(table.files[target]) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, Image.DecompressionBombError) as exc:
            stats.errors += 1
            stats.missing.append(target)
            yield DecodedFrame(target, None, f"unreadable image {table.files[target]} ({exc})")
            continue
        stats.decoded += 1
        stats.converted += 1
        yield DecodedFrame(target, resize_frame(rgb, size) if size else rgb)
