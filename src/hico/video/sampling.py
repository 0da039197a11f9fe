"""Which frames to read: the official VideoChat-Flash policies, reproduced index for index, plus plain options.

Official policies (the reader of the released code, `get_frame_indices` + the clip handling of its decord path):
- `dynamic_fps1`: about one frame per second, rounded down to a multiple of `local_num_frames`, capped at
  `max_num_frames`, then raised to `min_num_frames` (in that order, so a cap below the floor loses), then
  sampled with `middle`.
- `middle`: `max_num_frames` frames, each the middle of one of equal intervals; short videos repeat the last.
- `fpsX`: one frame every 1/X seconds, centred, truncated to `max_num_frames` (-1 = no cap).

The official reader counts frames and assumes a constant rate. Videos whose frames are not evenly spaced
(variable frame rate, dropped frames) are planned by time instead (`plan_samples_by_time`): the same frame
counts, computed from the real duration, and each sample is the frame on screen at the sample's time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from hico.errors import OptionError

_FPS_POLICY = re.compile(r"^fps(\d+(?:\.\d*)?|\.\d+)$")
END_MARGIN = 0.1  # seconds: the official reader keeps a clip end at least this far from the video end


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample a video. Defaults are those of the official `chat()` (HF checkpoints).

    Times are seconds; frame counts are frames. `max_num_frames=-1` means no cap (fps policies only).
    """

    policy: str = "dynamic_fps1"
    max_num_frames: int = 512
    min_num_frames: int = 64
    local_num_frames: int = 8
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.policy not in ("dynamic_fps1", "middle") and not _FPS_POLICY.match(self.policy):
            raise OptionError(f"unknown sampling policy {self.policy!r}: use dynamic_fps1, middle or fpsX "
                              "(for example fps1 or fps0.5)")
        if self.policy.startswith("fps") and float(self.policy[3:]) <= 0:
            raise OptionError(f"sampling policy {self.policy!r} asks for a non-positive frame rate")
        if self.max_num_frames == 0 or self.max_num_frames < -1:
            raise OptionError(f"max frames must be a positive number of frames (or -1 for no cap), "
                              f"got {self.max_num_frames}")
        if self.max_num_frames == -1 and self.policy != "dynamic_fps1" and not self.policy.startswith("fps"):
            raise OptionError(f"policy {self.policy} needs a frame count: give max frames >= 1")
        if self.min_num_frames < 1:
            raise OptionError(f"min frames must be at least 1, got {self.min_num_frames}")
        if self.local_num_frames < 1:
            raise OptionError(f"local_num_frames must be at least 1, got {self.local_num_frames}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise OptionError(f"{name} time must be a finite number of seconds, got {value}")
        if self.end is not None and self.end <= 0:
            raise OptionError(f"end time must be after the start of the video, got end={self.end} s")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise OptionError(f"start ({self.start} s) must be before end ({self.end} s)")

    @property
    def has_clip(self) -> bool:
        return self.start is not None or self.end is not None

    @classmethod
    def plain(cls, *, num_frames: int | None = None, fps: float | None = None, max_frames: int | None = None,
              start: float | None = None, end: float | None = None) -> SamplingOptions:
        """User-facing options: an exact frame count, or a target fps, or the official default; a cap; a range.

        Unlike the official policy, a `max_frames` below the default floor of 64 is honoured.
        """
        if num_frames is not None and fps is not None:
            raise OptionError("give either a frame count or a target fps, not both")
        if num_frames is not None and num_frames < 1:
            raise OptionError(f"frame count must be at least 1, got {num_frames}")
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise OptionError(f"target fps must be a positive number, got {fps}")
        if max_frames is not None and max_frames < 1:
            raise OptionError(f"max frames must be at least 1, got {max_frames}")
        if num_frames is not None:
            count = min(num_frames, max_frames) if max_frames is not None else num_frames
            return cls(policy="middle", max_num_frames=count, min_num_frames=1, start=start, end=end)
        if fps is not None:
            return cls(policy=f"fps{fps:g}", max_num_frames=max_frames or -1, min_num_frames=1,
                       start=start, end=end)
        defaults = cls()
        cap = max_frames if max_frames is not None else defaults.max_num_frames
        return cls(max_num_frames=cap, min_num_frames=min(defaults.min_num_frames, cap), start=start, end=end)


@dataclass(frozen=True)
class SamplePlan:
    """The frames to read: `indices` into the whole video (non-decreasing; repeats pad short videos)."""

    indices: tuple[int, ...]
    duration: float  # seconds, as the official time message states it (whole video or clip)
    time_msg: str
    options: SamplingOptions

    @property
    def num_frames(self) -> int:
        return len(self.indices)


def official_frame_indices(num_frames: int, vlen: int, sample: str, input_fps: float, max_num_frames: int = -1,
                           min_num_frames: int = 1, local_num_frames: int = 8) -> list[int]:
    """Frame indices exactly as the official reader's `get_frame_indices` computes them (random modes aside)."""
    if min_num_frames > vlen:
        min_num_frames = (vlen // local_num_frames) * local_num_frames
    if sample == "dynamic_fps1":
        segments = int((vlen / input_fps) // local_num_frames)
        num_frames = local_num_frames * segments if segments else local_num_frames
        if max_num_frames > 0:
            num_frames = min(num_frames, max_num_frames)
        num_frames = max(min_num_frames, num_frames)
        sample = "middle"
    if sample == "middle":
        intervals = min(num_frames, vlen)
        bounds = np.linspace(0, vlen, intervals + 1).astype(int)
        indices = ((bounds[:-1] + bounds[1:] - 1) // 2).tolist()
        return indices + indices[-1:] * (num_frames - len(indices))
    output_fps = float(sample[3:])
    delta = 1 / output_fps
    seconds = np.arange(delta / 2, vlen / input_fps + delta / 2, delta)
    indices = [int(i) for i in np.around(seconds * input_fps).astype(int) if i < vlen]
    return indices[:max_num_frames] if max_num_frames > 0 else indices


def time_message(duration: float, num_frames: int) -> str:
    """The official 'short' time message (leading newline and trailing space included)."""
    return f"\nThe video lasts for {duration:.2f} seconds, and {num_frames} frames are uniformly sampled from it. "


def clip_range(options: SamplingOptions, duration: float) -> tuple[float, float]:
    """The asked range clamped as the official reader clamps it: start at least 0, end at least END_MARGIN before
    the end of the video."""
    start = max(0.0, options.start if options.start is not None else 0.0)
    end = min(duration - END_MARGIN, options.end if options.end is not None else math.inf)
    if start >= end:
        raise OptionError(f"start time {start:g} s is at or past the end of the video "
                          f"({duration:.2f} s long); choose a start below {max(0.0, duration - END_MARGIN):.2f} s")
    return start, end


def plan_samples(vlen: int, fps: float, options: SamplingOptions = SamplingOptions()) -> SamplePlan:
    """Plan which of a video's `vlen` frames (average rate `fps`) to read.

    A time range is handled as the official reader does: start clamped to >= 0, end clamped to
    `duration - 0.1` s, indices offset by `int(start * fps)`.
    """
    if vlen < 1:
        raise OptionError("the video has no frames to sample")
    if not fps > 0:
        raise OptionError(f"the video's frame rate ({fps}) is not positive; pass an explicit fps for it")
    duration = vlen / fps
    offset = 0
    if options.has_clip:
        start, end = clip_range(options, duration)
        duration = end - start
        vlen = int(duration * fps)
        offset = int(start * fps)
        if vlen < 1:
            raise OptionError(f"the range {start:g}-{end:g} s holds no whole frame at {fps:g} fps; widen it")
    indices = official_frame_indices(options.max_num_frames, vlen, options.policy, fps, options.max_num_frames,
                                     options.min_num_frames, options.local_num_frames)
    if not indices:
        raise OptionError(f"policy {options.policy} selects no frame of this {duration:.2f} s video; "
                          "raise the fps or use a frame count")
    indices = tuple(i + offset for i in indices)
    return SamplePlan(indices=indices, duration=duration, time_msg=time_message(duration, len(indices)),
                      options=options)


def _frame_count(policy: str, seconds: float, options: SamplingOptions, available: int) -> int:
    """How many samples a policy takes from `seconds` of video holding `available` frames (official rules)."""
    if policy == "middle":
        return options.max_num_frames
    local = options.local_num_frames
    floor = options.min_num_frames
    if floor > available:
        floor = (available // local) * local
    segments = int(seconds // local)
    count = local * segments if segments else local
    if options.max_num_frames > 0:
        count = min(count, options.max_num_frames)
    return max(floor, count)


def plan_samples_by_time(times: np.ndarray, duration: float,
                         options: SamplingOptions = SamplingOptions()) -> SamplePlan:
    """Plan by presentation time, for videos whose frames are not evenly spaced.

    `times` are the frames' times in seconds from the first frame (ascending), `duration` the end of the last
    frame. Counts follow the official rules with the real duration in place of frames / average rate; sample k
    of `middle` (and `dynamic_fps1`) is at the middle of the k-th of equal time intervals, those of `fpsX` every
    1/X seconds from 1/(2X); each is the frame on screen at that time. A range is clamped as the official
    reader clamps it (end at least 0.1 s before the end of the video).
    """
    times = np.asarray(times, dtype=np.float64)
    if len(times) < 1:
        raise OptionError("the video has no frames to sample")
    if not duration > 0:
        raise OptionError(f"the video's duration ({duration}) is not positive")
    start, end = clip_range(options, duration) if options.has_clip else (0.0, duration)
    seconds = end - start
    first = max(int(np.searchsorted(times, start, side="right")) - 1, 0)
    available = int(np.searchsorted(times, end, side="left")) - first
    policy = options.policy
    if policy == "dynamic_fps1" or policy == "middle":
        count = _frame_count(policy, seconds, options, max(available, 1))
        at = start + (np.arange(count) + 0.5) * (seconds / count)
    else:
        step = 1 / float(policy[3:])
        at = start + np.arange(step / 2, seconds, step)
        if options.max_num_frames > 0:
            at = at[:options.max_num_frames]
    if len(at) == 0:
        raise OptionError(f"policy {policy} selects no frame of this {seconds:.2f} s video; "
                          "raise the fps or use a frame count")
    indices = np.maximum(np.searchsorted(times, at, side="right") - 1, 0)
    return SamplePlan(indices=tuple(int(i) for i in indices), duration=seconds,
                      time_msg=time_message(seconds, len(indices)), options=options)
