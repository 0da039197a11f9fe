"""The FFmpeg oracle of the real-video tests (tests/realvideo_support.py), checked against what a test wrote
itself, and its frame times against ffprobe's own frame count on every file of the real-video corpus."""

from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from realvideo_support import (count_frames, display_size, ffmpeg_rgb_frames, ffprobe_times, fill_times, psnr,
                               realvideo_files, rotation)

# A variable-frame-rate file of solid colours, stored losslessly (PNG in QuickTime, millisecond timestamps).
TIMES = (0.0, 0.1, 0.25, 0.3, 0.7)
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (17, 130, 250), (255, 255, 255))
WIDTH, HEIGHT = 48, 32
START = 1.0  # the first frame's timestamp: the oracle's times count from it

# Debian's ffmpeg is the oracle (`make test` and .ci/run install it); under CI its absence is a failure
pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None and not os.environ.get("CI"),
                                reason="Debian's ffmpeg is not installed (apt-get install ffmpeg)")


@pytest.fixture(scope="module")
def solid_colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oracle") / "solid.mov"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=1000)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "rgb24"
        stream.time_base = Fraction(1, 1000)
        for time, colour in zip(TIMES, COLOURS):
            frame = av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), colour, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round((START + time) * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_ffprobe_times_are_the_written_times_from_the_first_frame(solid_colours: Path) -> None:
    times = ffprobe_times(solid_colours)
    assert times.dtype == np.float64
    np.testing.assert_allclose(times, TIMES, atol=1e-6)


def test_ffmpeg_rgb_frames_are_the_written_colours(solid_colours: Path) -> None:
    frames = ffmpeg_rgb_frames(solid_colours, [4, 1, 2, 99])  # any order; 99 is past the end
    assert sorted(frames) == [1, 2, 4]
    for index, frame in frames.items():
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        assert (frame == COLOURS[index]).all(), f"frame {index}"
    assert ffmpeg_rgb_frames(solid_colours, []) == {}


def test_ffmpeg_rgb_frames_apply_the_display_rotation(rotated_mp4: Path) -> None:
    # the shared 128x80 file with a display rotation of 90 degrees: ffmpeg outputs it upright, 80 wide
    assert abs(rotation(rotated_mp4)) == 90
    assert display_size(rotated_mp4) == (80, 128)
    assert ffmpeg_rgb_frames(rotated_mp4, [0])[0].shape == (128, 80, 3)


def test_missing_times_are_filled_with_the_median_gap() -> None:
    # known gaps 0.1, 0.1 and 0.3: the median is 0.1
    np.testing.assert_allclose(fill_times([5.0, 5.1, None, 5.3, 5.4, 5.7, None]), [0, 0.1, 0.2, 0.3, 0.4, 0.7, 0.8])
    np.testing.assert_allclose(fill_times([None, None, 2.0, 2.5, 3.0]), [0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(fill_times([None, None, None], fallback_gap=0.04), [0, 0.04, 0.08])
    np.testing.assert_array_equal(fill_times([3.0]), [0.0])
    np.testing.assert_array_equal(fill_times([None]), [0.0])
    assert fill_times([]).shape == (0,)


def test_psnr() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # mean squared error 1
    assert psnr(a, a + 255) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        psnr(a, a[:2])


def test_every_corpus_video_has_one_time_per_counted_frame(realvideo: Path) -> None:
    files = realvideo_files(realvideo)
    assert files, "the corpus manifest lists no video file"

    def mismatch(path: Path) -> str | None:
        times, count = ffprobe_times(path), count_frames(path)
        return None if len(times) == count else f"{path.name}: {len(times)} times, {count} frames"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        mismatches = [m for m in pool.map(mismatch, files) if m]
    assert not mismatches, mismatches


def test_corpus_phone_video_is_rotated_upright(realvideo: Path) -> None:
    # docutils-doc's Android clip: 176x144 coded, -90 degrees of display rotation
    files = {path.name: path for path in realvideo_files(realvideo)}
    path = files.get("usr__share__doc__docutils-doc__docs__user__rst__images__pens.mp4")
    if path is None:
        pytest.skip("the corpus has no docutils-doc clip (tests/realvideo/packages changed?)")
    count = count_frames(path)
    assert rotation(path) == -90 and display_size(path) == (144, 176)
    frames = ffmpeg_rgb_frames(path, [count - 1, count])  # ffmpeg outputs as many frames as ffprobe counts
    assert list(frames) == [count - 1] and frames[count - 1].shape == (176, 144, 3)
