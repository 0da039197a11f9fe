"""Probing and decoding real (synthetic) files of several formats, checked frame by frame.

Each frame of the test media carries its own index as a block code, so every decoded frame is checked
against the index the sampling plan asked for, not against another run of the same code.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import math
import struct
import tracemalloc
import weakref
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (BITS, FOLDER_FRAMES, FPS, GIF_FRAME_MS, GIF_FRAMES, HEIGHT, LONG_FRAMES, LONG_GOP,
                      ROTATED_FRAMES, SHORT_FRAMES, VFR_TIMES, WIDTH)
from hico.synthetic.videos import frame_with_code, read_frame_code
from hico.video.decode import SEEK_COST_FRAMES, plan_access
from hico.video.preprocess import IMAGENET_MEAN, IMAGENET_STD
from hico.video.metadata import FrameTable, probe
from hico.video.reader import Video
from hico.video.sampling import SamplePlan, SamplingOptions


@dataclass(frozen=True)
class Expected:
    frames: int
    fps: float
    container: str  # a substring of FFmpeg's format name
    codec: str
    kind: str = "file"
    rotation: int = 0
    vfr: bool = False


EXPECTED = {
    "h264_mp4": Expected(LONG_FRAMES, FPS, "mp4", "h264"),
    "mpeg4_avi": Expected(SHORT_FRAMES, FPS, "avi", "mpeg4"),
    "vp9_webm": Expected(SHORT_FRAMES, FPS, "webm", "vp9"),
    # average rate: between (n-1)/span and n/span, depending on the duration given to the last frame
    "vfr_mp4": Expected(len(VFR_TIMES), (len(VFR_TIMES) - 0.5) / VFR_TIMES[-1], "mp4", "h264", vfr=True),
    "rotated_mp4": Expected(ROTATED_FRAMES, FPS, "mp4", "h264", rotation=90),
    "one_frame_mp4": Expected(1, FPS, "mp4", "h264"),
    "gif_file": Expected(GIF_FRAMES, 1000 / GIF_FRAME_MS, "gif", "gif"),
    "frame_folder": Expected(FOLDER_FRAMES, 1.0, "folder", "image", kind="frames"),
}
FORMATS = list(EXPECTED)


def codes(frames, rotation: int = 0) -> list[int]:
    """The frame code shown by each returned frame (undoing a display rotation first)."""
    return [read_frame_code(np.rot90(f.pixels, -(rotation // 90)), BITS) for f in frames]


def read(video: Video, plan, **kwargs) -> list:
    return list(video.frames(plan, None, **kwargs))


# --- probing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_probe_describes_each_format(name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(name)
    want = EXPECTED[name]
    info, table = probe(path)
    assert info.path == str(path)
    assert info.kind == want.kind
    assert want.container in info.container
    assert info.codec == want.codec
    assert (info.width, info.height) == (WIDTH, HEIGHT)  # stored size; the rotation is reported separately
    assert info.rotation == want.rotation
    assert info.num_frames == want.frames == table.num_frames
    assert info.frame_count == "counted" and info.num_frames_exact
    tolerance = 0.05 * want.fps if want.vfr else 1e-6
    assert info.fps == pytest.approx(want.fps, abs=tolerance)
    assert info.keyframes is not None and info.keyframes > 0
    assert info.keyframes == len(table.keyframes)
    assert table.keyframes[0] == 0  # decoding starts at a keyframe
    assert info.variable_frame_rate is want.vfr
    assert len(table.times) == want.frames and table.times[0] == 0.0
    assert np.all(np.diff(table.times) > 0)


def test_probe_h264_keyframe_table_has_every_gop(h264_mp4: Path) -> None:
    _, table = probe(h264_mp4)
    keys = table.keyframes.tolist()
    assert len(keys) >= LONG_FRAMES // LONG_GOP  # gop_size is the longest distance between keyframes
    assert all(0 < gap <= LONG_GOP for gap in np.diff(keys))
    assert table.seekable and table.pts is not None
    # frame i is shown at i / 30 s
    assert np.allclose(table.times, np.arange(LONG_FRAMES) / FPS, atol=1e-4)


def test_probe_frame_folder_orders_names_numerically(frame_folder: Path) -> None:
    _, table = probe(frame_folder)
    names = [Path(f).name for f in table.files]
    assert names == [f"img_{i}.png" for i in range(1, FOLDER_FRAMES + 1)]  # img_2 before img_10
    assert names.index("img_2.png") < names.index("img_10.png")


def test_probe_gif_times_follow_the_frame_delay(gif_file: Path) -> None:
    _, table = probe(gif_file)
    assert np.allclose(table.times, np.arange(GIF_FRAMES) * GIF_FRAME_MS / 1000)
    assert not table.seekable  # GIF frames draw over the previous canvas: front to back only


def test_probe_vfr_timestamps_are_the_written_times(vfr_mp4: Path) -> None:
    _, table = probe(vfr_mp4)
    assert np.allclose(table.times, VFR_TIMES, atol=1e-3)


# --- decoding exactly the planned frames -----------------------------------------------------------------


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
@pytest.mark.parametrize("name", FORMATS)
def test_decode_returns_exactly_the_planned_frames(name: str, isolate: bool, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(name)
    want = EXPECTED[name]
    with Video(path, isolate=isolate) as video:
        for count in (7, want.frames):  # sparse, then every frame
            plan = video.plan(SamplingOptions.plain(num_frames=count))
            frames = read(video, plan)
            assert [f.position for f in frames] == list(range(plan.num_frames))
            assert [f.index for f in frames] == list(plan.indices)
            assert codes(frames, want.rotation) == list(plan.indices)
            assert all(f.replaced_by is None for f in frames)
            assert video.report.replaced == 0 and video.report.samples == plan.num_frames
            shape = (WIDTH, HEIGHT, 3) if want.rotation in (90, 270) else (HEIGHT, WIDTH, 3)
            assert all(f.pixels.shape == shape and f.pixels.dtype == np.uint8 for f in frames)
        if want.frames > 1 and not want.vfr:
            assert list(plan.indices) == list(range(want.frames))  # the dense plan really was every frame
        elif want.vfr:  # planned by time: the frame on screen at the middle of each of equal time slices
            span = video.info.duration / want.frames
            on_screen = [max(i for i, t in enumerate(VFR_TIMES) if t <= (k + 0.5) * span + 1e-9)
                         for k in range(want.frames)]
            assert list(plan.indices) == on_screen


def test_one_frame_video_repeats_its_only_frame(one_frame_mp4: Path) -> None:
    with Video(one_frame_mp4, isolate=False) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=5))
        assert plan.indices == (0, 0, 0, 0, 0)
        frames = read(video, plan)
        assert codes(frames) == [0] * 5
        assert video.report.stats.converted == 1  # decoded once, shown five times


@pytest.mark.parametrize("name", FORMATS)
def test_worker_and_in_process_decoding_give_identical_pixels(name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(name)
    options = SamplingOptions.plain(num_frames=9)
    results = []
    for isolate in (False, True):
        with Video(path, isolate=isolate) as video:
            plan = video.plan(options)
            results.append((plan.indices, [f.pixels for f in read(video, plan)], video.info))
    (plan_a, pixels_a, info_a), (plan_b, pixels_b, info_b) = results
    assert plan_a == plan_b
    assert info_a == info_b
    assert len(pixels_a) == len(pixels_b) == 9
    for a, b in zip(pixels_a, pixels_b):
        assert np.array_equal(a, b)


def test_vfr_sample_times_are_the_written_times(vfr_mp4: Path) -> None:
    with Video(vfr_mp4) as video:
        for count in (6, len(VFR_TIMES)):
            plan = video.plan(SamplingOptions.plain(num_frames=count))
            times = video.times(plan)
            assert times == pytest.approx([VFR_TIMES[i] for i in plan.indices], abs=1e-3)
            frames = read(video, plan)
            assert codes(frames) == list(plan.indices)
            assert [f.time for f in frames] == pytest.approx([VFR_TIMES[i] for i in plan.indices], abs=1e-3)


# --- rotation ---------------------------------------------------------------------------------------------


def _tkhd_rotation(path: Path) -> float:
    """The counter-clockwise display rotation in the file's track header, by FFmpeg's av_display_rotation_get."""
    data = path.read_bytes()
    at = data.find(b"tkhd")
    version = data[at + 4]
    # after the box type: version/flags 4, times/track id/reserved/duration (v0: 4+4+4+4+4, v1: 8+8+4+4+8),
    # reserved 8, layer 2, alternate group 2, volume 2, reserved 2, then the 3x3 matrix
    offset = at + 4 + 4 + (20 if version == 0 else 32) + 16
    m = struct.unpack(">9i", data[offset:offset + 36])
    return -math.degrees(math.atan2(m[1] / 65536, m[0] / 65536))


def test_rotation_is_read_from_the_file(rotated_mp4: Path) -> None:
    assert _tkhd_rotation(rotated_mp4) == pytest.approx(90)  # what the writer put in the container
    info, _ = probe(rotated_mp4)
    assert info.rotation == 90


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
def test_autorotate_turns_frames_counter_clockwise(rotated_mp4: Path, isolate: bool) -> None:
    options = SamplingOptions.plain(num_frames=5)
    with Video(rotated_mp4, isolate=isolate, autorotate=False) as video:
        plan = video.plan(options)
        stored = read(video, plan)
    with Video(rotated_mp4, isolate=isolate, autorotate=True) as video:
        shown = read(video, video.plan(options))
    assert all(f.pixels.shape == (HEIGHT, WIDTH, 3) for f in stored)
    assert all(f.pixels.shape == (WIDTH, HEIGHT, 3) for f in shown)
    assert [read_frame_code(f.pixels, BITS) for f in stored] == list(plan.indices)
    for raw, turned in zip(stored, shown):
        # FFmpeg's display matrix angle is counter-clockwise: +90 means turn the stored picture a quarter
        # turn to the left, which is np.rot90(k=1) (the top row becomes the left column, read bottom up)
        assert np.array_equal(turned.pixels, np.rot90(raw.pixels, 1))
        assert not np.array_equal(turned.pixels, np.rot90(raw.pixels, -1))
    # the stored top row (where the frame code is) becomes the left column, read from the bottom up
    assert np.array_equal(shown[0].pixels[::-1, 0], stored[0].pixels[0, :])
    assert [read_frame_code(np.rot90(f.pixels, -1), BITS) for f in shown] == list(plan.indices)


# --- access strategies ------------------------------------------------------------------------------------


def _table(num_frames: int, keyframes, seekable: bool = True) -> FrameTable:
    return FrameTable(times=np.arange(num_frames) / 30.0, keyframes=np.asarray(keyframes, np.int64),
                      pts=np.arange(num_frames, dtype=np.int64), seekable=seekable)


def test_plan_access_seeks_for_sparse_samples() -> None:
    table = _table(1000, range(0, 1000, 100))
    plan = plan_access(table, [150, 450, 750])
    assert plan.seek_before == (True, True, True)
    assert plan.strategy == "seek"
    assert plan.frames_to_decode == 3 * 51  # 100..150, 400..450, 700..750


def test_plan_access_reads_forward_for_dense_samples() -> None:
    table = _table(1000, range(0, 1000, 100))
    targets = list(range(0, 1000, 5))  # 20 samples per GOP
    plan = plan_access(table, targets)
    assert plan.strategy == "sequential"
    assert not any(plan.seek_before)
    assert plan.frames_to_decode == 996  # frames 0..995, each once


def test_plan_access_seeks_only_when_it_skips_more_than_a_seek_costs() -> None:
    # after frame 5, reaching frame 20 from keyframe k skips frames 6..k-1, i.e. k - 6 of them
    cheap = plan_access(_table(30, [0, 6 + SEEK_COST_FRAMES]), [5, 20])
    costly = plan_access(_table(30, [0, 6 + SEEK_COST_FRAMES + 1]), [5, 20])
    assert cheap.seek_before == (False, False) and cheap.frames_to_decode == 21
    assert costly.seek_before == (False, True) and costly.frames_to_decode == 6 + (20 - 15 + 1)


def test_plan_access_forced_strategies_and_unseekable_input() -> None:
    table = _table(1000, range(0, 1000, 100))
    targets = [10, 20, 150, 160, 550]
    assert plan_access(table, targets, "seek").seek_before == (True, False, True, False, True)  # first: to the start
    assert plan_access(table, targets, "sequential").seek_before == (False,) * 5
    assert plan_access(table, [150, 450], "sequential").seek_before == (True, False)  # first: jump to its GOP
    unseekable = plan_access(_table(1000, range(0, 1000, 100), seekable=False), [150, 450, 750])
    assert unseekable.seek_before == (False,) * 3 and unseekable.strategy == "sequential"
    assert unseekable.frames_to_decode == 751
    with pytest.raises(ValueError, match="unknown decode strategy"):
        plan_access(table, targets, "fastest")


def test_auto_strategy_on_a_real_file(h264_mp4: Path) -> None:
    with Video(h264_mp4, isolate=False) as video:
        keys = video.table.keyframes
        sparse = video.plan(SamplingOptions.plain(num_frames=4))
        access = video.access_plan(sparse)
        # every sample in its own GOP; the first needs no seek when it lies in the first GOP
        assert len(set(np.searchsorted(keys, sparse.indices, side="right"))) == 4
        assert access.strategy in ("seek", "mixed")
        assert sum(access.seek_before) >= 3
        assert access.frames_to_decode < sparse.indices[-1] / 2
        dense = video.plan(SamplingOptions.plain(num_frames=LONG_FRAMES // 2))
        access = video.access_plan(dense)
        assert access.strategy == "sequential"
        assert access.frames_to_decode == dense.indices[-1] + 1


@pytest.mark.parametrize("count", [5, LONG_FRAMES // 2], ids=["sparse", "dense"])
def test_strategies_return_identical_pixels(h264_mp4: Path, count: int) -> None:
    results, seeks = {}, {}
    with Video(h264_mp4, isolate=False) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=count))
        for strategy in ("seek", "sequential", "auto"):
            frames = read(video, plan, strategy=strategy)
            assert codes(frames) == list(plan.indices), strategy
            results[strategy] = [f.pixels for f in frames]
            seeks[strategy] = video.report.stats.seeks
    assert seeks["sequential"] == 0
    assert seeks["seek"] >= 3  # the comparison is meaningful: the seek run really repositioned
    for strategy in ("sequential", "auto"):
        assert all(np.array_equal(a, b) for a, b in zip(results["seek"], results[strategy])), strategy


def test_strategies_agree_through_the_worker(h264_mp4: Path) -> None:
    with Video(h264_mp4, isolate=True) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=6))
        seek = read(video, plan, strategy="seek")
        sequential = read(video, plan, strategy="sequential")
    assert codes(seek) == codes(sequential) == list(plan.indices)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(seek, sequential))


# --- clips ------------------------------------------------------------------------------------------------


def _clip_codes(pixels: torch.Tensor) -> list[int]:
    """Undo the normalisation, scale each 224x224 frame back to the source size and read its code."""
    mean = np.asarray(IMAGENET_MEAN).reshape(3, 1, 1)
    std = np.asarray(IMAGENET_STD).reshape(3, 1, 1)
    out = []
    for frame in pixels.numpy():
        rgb = np.clip(np.round((frame * std + mean) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        back = np.asarray(Image.fromarray(rgb).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC))
        out.append(read_frame_code(back, BITS))
    return out


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
def test_clips_are_preprocessed_and_the_last_one_padded(h264_mp4: Path, isolate: bool) -> None:
    with Video(h264_mp4, isolate=isolate) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=10))
        clips = list(video.clips(plan))
    assert len(clips) == 3
    assert [c.valid for c in clips] == [4, 4, 2]
    for clip in clips:
        assert tuple(clip.pixels.shape) == (4, 3, 224, 224) and clip.pixels.dtype == torch.float32
    idx = plan.indices
    assert [c.indices for c in clips] == [idx[0:4], idx[4:8], (idx[8], idx[9], idx[9], idx[9])]
    assert clips[2].times == pytest.approx([idx[8] / FPS] + [idx[9] / FPS] * 3, abs=1e-4)
    assert torch.equal(clips[2].pixels[2], clips[2].pixels[1]) and torch.equal(clips[2].pixels[3], clips[2].pixels[1])
    for clip in clips:
        assert _clip_codes(clip.pixels) == list(clip.indices)


def test_clip_stream_holds_one_clip_at_a_time(h264_mp4: Path) -> None:
    clip_bytes = 4 * 3 * 224 * 224 * 4  # one preprocessed float32 clip
    with Video(h264_mp4, isolate=False) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=LONG_FRAMES))
        assert plan.num_frames == LONG_FRAMES
        refs: list[weakref.ref] = []
        most_alive = 0
        gc.collect()
        tracemalloc.start()
        try:
            for clip in video.clips(plan):
                refs.append(weakref.ref(clip.pixels))
                most_alive = max(most_alive, sum(r() is not None for r in refs))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(refs) == LONG_FRAMES // 4
    assert most_alive <= 2  # the clip in hand (and at most the one being replaced)
    # numpy arrays are traced: the 100 preprocessed clips of this video would need 100 * 2.4 MB = 240 MB;
    # streaming holds a few clips' worth (the one in hand, the one being built, lookup scratch)
    assert peak < 5 * clip_bytes, f"peak {peak / 1e6:.1f} MB while streaming clips"


def test_unwanted_non_reference_frames_are_not_decoded(h264_mp4: Path) -> None:
    """x264 writes B-frames nothing refers to; a sparse forward pass skips them but returns exact targets."""
    with Video(h264_mp4, isolate=False) as video:
        targets = list(range(3, video.info.num_frames, 10))
        plan = SamplePlan(tuple(targets), 0.0, "", SamplingOptions())
        got = [(f.index, read_frame_code(f.pixels, BITS)) for f in video.frames(plan, strategy="sequential")]
        stats = video.report.stats
    assert got == [(t, t) for t in targets]
    assert stats.decoded < 0.8 * (targets[-1] + 1), f"decoded {stats.decoded} frames to reach {targets[-1]}"


# --- MPEG elementary and program streams: no container timing --------------------------------------------------


def _write_mpeg(path: Path, fmt: str, codec: str, rate: Fraction, frames: int = 48) -> Path:
    """MPEG video with B-frames; frame i shows code i. Raw elementary streams carry no timestamps of their own."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = 12, 2
        stream.codec_context.bit_rate = 4_000_000
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_with_code(i, WIDTH, HEIGHT, BITS), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("name,fmt,codec,rate", [
    ("es.m2v", "mpeg2video", "mpeg2video", Fraction(30000, 1001)),
    ("es.m1v", "mpeg1video", "mpeg1video", Fraction(25)),
    ("ps.mpg", "mpeg", "mpeg2video", Fraction(24000, 1001)),
])
def test_mpeg_streams_take_the_codecs_frame_rate(tmp_path: Path, name: str, fmt: str, codec: str,
                                                 rate: Fraction) -> None:
    path = _write_mpeg(tmp_path / name, fmt, codec, rate)
    info, table = probe(path)
    assert info.num_frames == 48 and not info.variable_frame_rate
    assert info.fps == pytest.approx(float(rate), rel=1e-6)  # the raw demuxer's own guess is 25 fps
    assert np.allclose(table.times, np.arange(48) / float(rate), atol=1e-3)
    assert info.duration == pytest.approx(48 / float(rate), abs=1e-3)
    with Video(path) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=9))
        for strategy in ("auto", "seek", "sequential"):
            assert codes(read(video, plan, strategy=strategy)) == list(plan.indices)


@pytest.mark.skipif(shutil.which("ffmpeg") is None and not os.environ.get("CI"), reason="needs Debian's ffmpeg")
def test_edit_list_that_starts_mid_gop_counts_only_shown_frames(h264_mp4: Path, tmp_path: Path) -> None:
    """`ffmpeg -ss T -c copy` keeps the GOP before T for decoding and an edit list that hides it: those frames are
    decoded as references but never shown, so they are not frames of the video (FFmpeg outputs none of them)."""
    trimmed = tmp_path / "trimmed.mp4"
    start = 70  # frames: inside the second GOP of 50, so 20 leading frames are hidden
    subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{start / FPS}", "-i", str(h264_mp4), "-c", "copy",
                    str(trimmed)], check=True)
    info, table = probe(trimmed)
    assert info.num_frames == LONG_FRAMES - start
    assert np.allclose(table.times, np.arange(info.num_frames) / FPS, atol=1e-3)
    with Video(trimmed, isolate=False) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=9))
        for strategy in ("auto", "seek", "sequential"):
            assert codes(read(video, plan, strategy=strategy)) == [start + i for i in plan.indices]
        assert video.access_plan(plan, "seek").frames_to_decode < LONG_FRAMES  # no detour through the last GOP


def test_cover_art_is_not_the_video() -> None:
    """An attached picture (cover art) is a one-frame video stream; the video is the first other one."""
    from types import SimpleNamespace

    from hico.video.metadata import video_stream

    cover = SimpleNamespace(disposition=av.stream.Disposition.attached_pic | av.stream.Disposition.default)
    movie = SimpleNamespace(disposition=av.stream.Disposition.default)
    assert video_stream(SimpleNamespace(streams=SimpleNamespace(video=[cover, movie]))) is movie
    assert video_stream(SimpleNamespace(streams=SimpleNamespace(video=[cover]))) is cover  # a picture alone
