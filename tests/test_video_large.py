"""A 4096x4096 HuffYUV AVI (psychtoolbox-3-common's Testmovie.avi, 608 MB): read with bounded memory, as FFmpeg
reads it. Slow (a 26 MB download, 600 MB unpacked): `make test-slow`."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hico.video import SamplingOptions, Video
from realvideo_support import ffmpeg_rgb_frames, ffprobe_times, psnr

pytestmark = pytest.mark.slow
FOLDER = Path(__file__).resolve().parents[1] / "build" / "realvideo-large"
NAME = "usr__share__psychtoolbox-3__PsychTests__Testmovie.avi"
FRAME_BYTES = 4096 * 4096 * 3  # one RGB frame at the original size: 48 MiB


@pytest.fixture(scope="module")
def testmovie() -> Path:
    here = Path(__file__).resolve().parent / "realvideo"
    result = subprocess.run([str(here / "fetch"), str(FOLDER), str(here / "packages-large")], capture_output=True,
                            text=True)
    if result.returncode != 0 or not (FOLDER / NAME).exists():
        reason = f"could not fetch {NAME}: {result.stderr.strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return FOLDER / NAME


def test_4096_square_huffyuv_reads_like_ffmpeg_in_bounded_memory(testmovie: Path) -> None:
    """Memory does not grow with the frames read: the decoder process's peak for the default sampling (8 frames)
    is that for 2 frames within 2 frames' worth, and this process grows by less than 4 frames (the whole file as
    RGB would be 480 MiB)."""
    want = ffprobe_times(testmovie)
    peaks = {}
    for count in (2, 8):
        with Video(testmovie) as video:  # decoded in a fresh worker process; this process resizes
            info = video.info
            assert (info.width, info.height, info.num_frames) == (4096, 4096, len(want))
            assert np.abs(video.table.times - want).max() <= 1e-3
            plan = video.plan(SamplingOptions.plain(num_frames=count) if count == 2 else SamplingOptions())
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            clips = list(video.clips(plan, size=224))
            growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
            peaks[plan.num_frames] = video.worker.worker_maxrss_kb * 1024
            assert sum(c.valid for c in clips) == plan.num_frames and video.report.replaced == 0
            assert growth < 4 * FRAME_BYTES, f"reading grew this process by {growth / 2**20:.0f} MiB"
    assert set(peaks) == {2, 8}
    assert peaks[8] - peaks[2] < 2 * FRAME_BYTES, f"decoder peaks {[p / 2**20 for p in peaks.values()]} MiB"
    with Video(testmovie) as video:
        frames = {f.index: f.pixels for f in video.frames(video.plan(SamplingOptions.plain(num_frames=3)), None)}
    reference = ffmpeg_rgb_frames(testmovie, frames)
    for index, pixels in frames.items():
        assert psnr(pixels, reference[index]) >= 40
