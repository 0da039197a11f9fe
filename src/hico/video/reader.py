"""`Video`: one opened input, its sampling plan, and bounded streams of frames and preprocessed clips.

Damaged data: a sampled frame that cannot be decoded is replaced by the nearest decodable sample (the
previous one, or the next one at the start) and counted in `ReadReport.replaced`; when more than
`max_replaced` (a fraction of the samples) are lost the read fails with `CorruptVideoError`, and when none
decodes with `NoDecodableFramesError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hico.clips import FRAMES_PER_CLIP, TOKENS_PER_FRAME  # noqa: F401  (TOKENS_PER_FRAME: `hico.video` exports it)
from hico.errors import CorruptVideoError, NoDecodableFramesError, OptionError
from hico.video.decode import AccessPlan, DecodedFrame, DecodeStats, decode_file, decode_folder, plan_access
from hico.video.preprocess import normalize, resize_frame
from hico.video.metadata import FOLDER_FPS, probe
from hico.video.sampling import SamplePlan, SamplingOptions, plan_samples, plan_samples_by_time
from hico.video.worker import WorkerClient

log = logging.getLogger(__name__)
CLIP_FRAMES = FRAMES_PER_CLIP  # the name `hico.video` exports (TOKENS_PER_FRAME too, imported above)


@dataclass(frozen=True)
class SampledFrame:
    position: int  # place in the sampling plan
    index: int  # frame index in the video
    time: float  # seconds from the first frame
    pixels: np.ndarray  # (H, W, 3) uint8 RGB, resized to (size, size) when a size was asked
    replaced_by: int | None = None  # the index actually shown when this one could not be decoded
    concealed: bool = False  # the decoder repaired damaged data in it (error concealment); it may show artefacts


@dataclass(frozen=True)
class Clip:
    """`pixels` (clip_frames, 3, S, S) float32 preprocessed; a short last clip is padded with its last frame."""

    pixels: torch.Tensor
    indices: tuple[int, ...]
    times: tuple[float, ...]
    valid: int  # real frames; the rest is padding


@dataclass
class ReadReport:
    strategy: str = ""
    samples: int = 0
    replaced: int = 0
    stats: DecodeStats = field(default_factory=DecodeStats)


class Video:
    """An opened video file or frame folder.

    `isolate=True` decodes in a worker process with a no-progress `timeout` (seconds). `autorotate` applies
    the file's display rotation (the official reader ignores it). `max_replaced` is the largest share of
    sampled frames that may be replaced by neighbours before a read fails. `worker` lends a decode worker
    that outlives this video (its own timeout applies; closing the video leaves it running for the next
    file); without it an isolated video starts and stops its own. `count_frames` decodes every frame while
    opening, as `ffprobe -count_frames` does, so that a damaged file's frame count and times are the decoder's
    (by default they come from the packets, which is exact for intact files).
    """

    def __init__(self, path: str | Path, *, isolate: bool = True, timeout: float = 30.0, autorotate: bool = True,
                 folder_fps: float = FOLDER_FPS, max_replaced: float = 0.1,
                 worker: WorkerClient | None = None, count_frames: bool = False) -> None:
        if not timeout > 0:
            raise OptionError(f"decode timeout must be a positive number of seconds, got {timeout}")
        if not 0 <= max_replaced <= 1:
            raise OptionError(f"max_replaced is a fraction of the samples in [0, 1], got {max_replaced}")
        if not folder_fps > 0:
            raise OptionError(f"folder fps must be positive, got {folder_fps}")
        self.path = str(path)
        self.count_frames = count_frames
        self.autorotate = autorotate
        self.max_replaced = max_replaced
        self.worker: WorkerClient | None = None
        self.owns_worker = worker is None
        if isolate and not Path(path).is_dir():
            self.worker = worker if worker is not None else WorkerClient(self.path, timeout)
            self.info, self.table = self.worker.open(self.path, count_frames)
        else:
            self.info, self.table = probe(path, folder_fps, count_frames=count_frames)
        self.report = ReadReport()

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.worker is not None and self.owns_worker:
            self.worker.close()

    def plan(self, options: SamplingOptions = SamplingOptions()) -> SamplePlan:
        """The official plan (frame counts at the average rate) for evenly spaced frames, and a plan by
        presentation time for a variable frame rate, where frame counts and the average rate misstate time."""
        if self.info.variable_frame_rate:
            return plan_samples_by_time(self.table.times, self.info.duration, options)
        return plan_samples(self.info.num_frames, self.info.fps, options)

    def access_plan(self, plan: SamplePlan, strategy: str = "auto") -> AccessPlan:
        return plan_access(self.table, sorted(set(plan.indices)), strategy)

    def times(self, plan: SamplePlan) -> list[float]:
        return [float(self.table.times[i]) for i in plan.indices]

    def frames(self, plan: SamplePlan, size: int | None = None, *, strategy: str = "auto",
               progress: bool = False) -> Iterator[SampledFrame]:
        """The plan's frames in order (repeats included), decoded once each; at most one decoded frame is held."""
        if any(b < a for a, b in zip(plan.indices, plan.indices[1:])):
            raise OptionError("a sampling plan must list frames in time order")
        targets = sorted(set(plan.indices))
        self.report = report = ReadReport(samples=len(plan.indices))
        stats = report.stats
        if self.info.kind == "frames":
            decoded = decode_folder(self.table, targets, size=size, stats=stats)
        elif self.worker is not None:
            if self.worker.path != self.path:  # a lent worker that has opened another file since
                self.worker.open(self.path, self.count_frames)
            decoded = _resized(self.worker.decode(targets, None, self.autorotate, strategy, stats), size)
        else:
            decoded = decode_file(self.path, self.table, targets, size=size, autorotate=self.autorotate,
                                  strategy=strategy, stats=stats)
        bar = tqdm(total=len(plan.indices), desc="frames decoded", unit="frame", disable=not progress, leave=False)
        with bar:
            for item in self._fill_gaps(decoded, plan, report):
                bar.update(1)
                yield item
        report.strategy = stats.strategy
        if stats.concealed:
            log.warning("%s: the decoder repaired damaged data in %d sampled frames; they may show artefacts",
                        self.path, stats.concealed)
        if stats.unplaced:
            log.warning("%s: %d decoded frames carried timestamps out of order or unknown to the container and were "
                        "left out", self.path, stats.unplaced)
        if stats.errors:
            log.warning("%s: the decoder rejected %d damaged packets; the frames around them may show artefacts",
                        self.path, stats.errors)
        if report.replaced:
            log.warning("%s: %d of %d sampled frames could not be decoded and were replaced by their nearest "
                        "decodable neighbour", self.path, report.replaced, report.samples)

    def _fill_gaps(self, decoded: Iterator[DecodedFrame], plan: SamplePlan,
                   report: ReadReport) -> Iterator[SampledFrame]:
        limit = math.floor(self.max_replaced * len(plan.indices) + 1e-9)
        position = 0
        waiting: list[int] = []  # leading positions with no decodable frame yet
        last: DecodedFrame | None = None
        for item in decoded:
            positions = []
            while position < len(plan.indices) and plan.indices[position] == item.index:
                positions.append(position)
                position += 1
            if item.pixels is None:
                report.replaced += len(positions)
                if report.replaced > limit:
                    raise CorruptVideoError(self.path, f"{report.replaced} of {len(plan.indices)} sampled frames "
                                            "could not be decoded (damaged or truncated data)",
                                            f"Re-encode or re-download the file, or allow more replaced samples "
                                            f"(now at most {self.max_replaced:.0%})")
                if last is None:
                    waiting.extend(positions)
                else:
                    yield from (self._sample(p, plan, last, replaced=True) for p in positions)
                continue
            last = item
            for p in waiting:
                yield self._sample(p, plan, item, replaced=True)
            waiting = []
            yield from (self._sample(p, plan, item) for p in positions)
        if last is None:
            raise NoDecodableFramesError(self.path, "none of the sampled frames could be decoded",
                                         "The video data is damaged; re-encode or re-download it")

    def _sample(self, position: int, plan: SamplePlan, item: DecodedFrame, replaced: bool = False) -> SampledFrame:
        index = plan.indices[position]
        return SampledFrame(position, index, float(self.table.times[index]), item.pixels,
                            replaced_by=item.index if replaced else None, concealed=item.concealed)

    def clips(self, plan: SamplePlan, size: int = 224, clip_frames: int = CLIP_FRAMES, *, strategy: str = "auto",
              progress: bool = False) -> Iterator[Clip]:
        """Preprocessed clips of `clip_frames` frames; only the clip being built is held in memory."""
        if size < 16:
            raise OptionError(f"frame size must be at least 16 pixels, got {size}")
        buffer: list[SampledFrame] = []
        for frame in self.frames(plan, size, strategy=strategy, progress=progress):
            buffer.append(frame)
            if len(buffer) == clip_frames:
                yield _make_clip(buffer, clip_frames)
                buffer = []
        if buffer:
            yield _make_clip(buffer, clip_frames)


def _resized(decoded: Iterator[DecodedFrame], size: int | None) -> Iterator[DecodedFrame]:
    """Resize frames from the worker here: the worker's decoding and this process's resizing then run on
    separate cores without sharing a GIL (measured: 56 s -> 49 s for 8192 frames of an hour, 2 cores)."""
    for item in decoded:
        if size and item.pixels is not None:
            item = DecodedFrame(item.index, resize_frame(item.pixels, size), item.reason, item.concealed)
        yield item


def _make_clip(frames: list[SampledFrame], clip_frames: int) -> Clip:
    valid = len(frames)
    frames = frames + frames[-1:] * (clip_frames - valid)
    pixels = normalize(np.stack([f.pixels for f in frames]))
    return Clip(pixels, tuple(f.index for f in frames), tuple(f.time for f in frames), valid)


def open_video(path: str | Path, **kwargs) -> Video:
    """Open a video file (any container FFmpeg reads, GIF included) or a folder of numbered frames."""
    return Video(path, **kwargs)


def stream_clips(path: str | Path, options: SamplingOptions = SamplingOptions(), size: int = 224,
                 clip_frames: int = CLIP_FRAMES, **kwargs) -> Iterator[Clip]:
    """Open, sample and stream preprocessed clips in one call; the video is closed when the stream ends."""
    with Video(path, **kwargs) as video:
        yield from video.clips(video.plan(options), size, clip_frames)
