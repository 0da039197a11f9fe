"""Every corpus file (tests/realvideo/fetch: videos Debian packages ship) read as FFmpeg reads it.

The oracle is a plain decode of every frame in order by Debian's ffmpeg/ffprobe (tests/realvideo_support.py):
frame i is the i-th frame it outputs, its time ffprobe's best-effort timestamp. For each file: the frame count and
every frame's time (1 ms), and the pixels of the sampled frames (PSNR >= 40 dB at the original size) for the
default sampling and a sparse one, with each access strategy.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hico.errors import NotAMediaFileError, NoVideoStreamError
from hico.video import SamplePlan, SamplingOptions, Video
from hico.video.decode import STRATEGIES
from realvideo_support import ffmpeg_rgb_frames, ffprobe_times, psnr, realvideo_files

MIN_PSNR = 40.0
TIME_TOLERANCE = 1e-3
# Files whose timestamps are broken, where FFmpeg's times are no truth to match: hico counts the same frames and
# keeps their times increasing on the container's grid.
BROKEN_TIMESTAMPS = {
    "mkv.mkv": "ffprobe's times jump back to 0 at frame 56",
    "box.mp4": "the muxer wrote pts = dts for reordered frames: FFmpeg's best-effort times lag two frames behind",
}


def last_frame_duration(path: Path) -> float | None:
    """ffprobe's duration of the last decoded frame (its packet's duration), None when it gives none."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=pkt_duration_time", "-of", "json", str(path)], capture_output=True, text=True)
    frames = json.loads(out.stdout or "{}").get("frames") or [{}]
    value = frames[-1].get("pkt_duration_time")
    return float(value) if value not in (None, "N/A") and float(value) > 0 else None


def elementary_rate(path: Path) -> float | None:
    """The codec's frame rate of an elementary stream (a format without timestamps: .m1v, .m2v, .h264), else None.

    FFmpeg's best-effort times for these start with a one-frame jump (0, 2/fps, 3/fps, ...): the decoder's delay
    shows in timestamps that the parser guessed; the frames' real spacing is the codec's rate."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "format=format_name:stream=r_frame_rate", "-of", "json", str(path)],
                         capture_output=True, text=True)
    info = json.loads(out.stdout or "{}")
    if info.get("format", {}).get("format_name") not in ("mpegvideo", "h264", "hevc", "m4v", "cavsvideo", "vc1"):
        return None
    num, den = info["streams"][0]["r_frame_rate"].split("/")
    return int(num) / int(den)


def short(path: Path) -> str:
    return path.name.split("__")[-1]


def corpus(kind: str = "video") -> list[Path]:
    """The corpus files, fetched while the tests are collected; one placeholder case when the corpus cannot be
    had, which the `realvideo` fixture then fails (under CI) or skips."""
    from conftest import REALVIDEO, fetch_realvideo

    if fetch_realvideo():
        return [REALVIDEO / "missing"]
    return realvideo_files(REALVIDEO, kind)


def _corpus_file(realvideo: Path, path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is not in the corpus at {realvideo}; run tests/realvideo/fetch again")
    return path


@pytest.mark.parametrize("path", corpus(), ids=short)
def test_frames_and_times_are_ffmpegs(realvideo: Path, path: Path) -> None:
    path = _corpus_file(realvideo, path)
    want = ffprobe_times(path)
    if short(path) in BROKEN_TIMESTAMPS:
        with Video(path, isolate=False) as video:
            assert video.info.num_frames == len(want)
            assert np.all(np.diff(video.table.times) > 0)
        return
    if elementary_rate(path):  # no container timing: frame i at i / the codec's rate
        want = np.arange(len(want)) / elementary_rate(path)
    with Video(path, isolate=False, count_frames=True) as video:
        assert video.info.num_frames == len(want)
        assert np.abs(video.table.times - want).max() <= TIME_TOLERANCE
    with Video(path, isolate=False) as video:  # from the packets (and the first frames) alone
        assert video.info.num_frames == len(want)
        assert np.abs(video.table.times - want).max() <= TIME_TOLERANCE
        assert not any("truncated" in note for note in video.info.notes), video.info.notes
        # the video ends when its last frame does: that frame's duration, else a typical gap between frames
        last = last_frame_duration(path) or (float(np.median(np.diff(want))) if len(want) > 1 else None)
        if last:
            assert video.info.duration == pytest.approx(want[-1] + last, abs=TIME_TOLERANCE)


@pytest.mark.parametrize("path", corpus(), ids=short)
def test_sampled_pixels_are_ffmpegs_with_every_strategy(realvideo: Path, path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = _corpus_file(realvideo, path)
    plans = {}
    with Video(path, isolate=False) as video:
        for name, options in (("default", SamplingOptions()), ("sparse", SamplingOptions.plain(num_frames=7))):
            plans[name] = video.plan(options)
        wanted = sorted({i for plan in plans.values() for i in plan.indices})
        reference = ffmpeg_rgb_frames(path, wanted)
        for strategy in STRATEGIES:
            for name, plan in plans.items():
                access = video.access_plan(plan, strategy)
                if strategy != "auto" and access == video.access_plan(plan, "auto"):
                    continue  # the same reads as "auto" (a file read front to back): decoded once
                with caplog.at_level(logging.WARNING):
                    frames = list(video.frames(plan, None, strategy=strategy))
                assert [f.index for f in frames] == list(plan.indices)
                replaced = [f.index for f in frames if f.replaced_by is not None]
                assert not replaced, f"{strategy}/{name}: frames {replaced} could not be decoded"
                for frame in frames:
                    if frame.replaced_by is None:
                        quality = psnr(frame.pixels, reference[frame.index])
                        assert quality >= MIN_PSNR, f"{strategy}/{name}: frame {frame.index} at {quality:.1f} dB"


def test_a_packet_without_a_picture_is_not_a_frame(realvideo: Path) -> None:
    """afl's small_movie.mp4: one of its 12 packets holds no picture, so FFmpeg outputs 11 frames. The probe decodes a
    file this short to its end and counts what the decoder gives."""
    path = _corpus_file(realvideo, realvideo / "usr__share__doc__afl++-doc__afl__testcases__multimedia__h264__small_movie.mp4")
    want = ffprobe_times(path)
    reference = ffmpeg_rgb_frames(path, range(len(want)))
    with Video(path) as video:
        assert video.info.num_frames == len(want) == 11
        assert any("11 frames for 12 packets" in note for note in video.info.notes)
        frames = list(video.frames(SamplePlan(tuple(range(len(want))), 1.0, "", SamplingOptions()), None))
        assert video.report.replaced == 0
    for frame in frames:
        assert psnr(frame.pixels, reference[frame.index]) >= MIN_PSNR


def test_variable_frame_rate_is_planned_by_time(realvideo: Path) -> None:
    """tree.avi: 68 frames whose times run from 0 to 29.5 s (the AVI lists 444 slots, most of them dropped)."""
    path = _corpus_file(realvideo, realvideo / "usr__share__doc__opencv-doc__examples__data__tree.avi")
    want = ffprobe_times(path)
    with Video(path) as video:
        info = video.info
        assert info.variable_frame_rate and info.num_frames == len(want) == 68
        assert info.duration == pytest.approx(29.6, abs=0.01)
        assert not any("truncated" in note for note in info.notes)
        plan = video.plan(SamplingOptions())
        assert plan.time_msg == ("\nThe video lasts for 29.60 seconds, and 64 frames are uniformly sampled from it. ")
        one_fps = video.plan(SamplingOptions.plain(fps=1))
        assert one_fps.num_frames == 30  # one frame every second from 0.5 s to 29.5 s
        for k, index in enumerate(one_fps.indices):  # the frame on screen at k + 0.5 s
            at = k + 0.5
            assert want[index] <= at and (index + 1 == len(want) or want[index + 1] > at)


@pytest.mark.parametrize("path", corpus("novideo"), ids=short)
def test_audio_only_file_is_refused_clearly(realvideo: Path, path: Path) -> None:
    path = _corpus_file(realvideo, path)
    with pytest.raises((NoVideoStreamError, NotAMediaFileError)) as caught:
        Video(path, isolate=False)
    message = str(caught.value)
    assert str(path) in message and ("no video stream" in message or "not a media file" in message)
