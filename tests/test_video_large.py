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
    want = ffprobe_times(testmovie)
    with Video(testmovie) as video:  # decoded in the worker process; the parent resizes
        info = video.info
        assert (info.width, info.height, info.num_frames) == (4096, 4096, len(want))
        assert np.abs(video.table.times - want).max() <= 1e-3
        plan = video.plan(SamplingOptions())
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        clips = list(video.clips(plan, size=224))
        parent_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        worker_peak = video.worker.worker_maxrss_kb * 1024
        frames = {f.index: f.pixels for f in video.frames(video.plan(SamplingOptions.plain(num_frames=3)), None)}
    assert sum(c.valid for c in clips) == plan.num_frames and video.report.replaced == 0
    # the whole file as RGB is 480 MiB; the worker holds a few frames in flight, the parent one frame and a clip
    assert worker_peak < 8 * FRAME_BYTES, f"decoder process peaked at {worker_peak / 2**20:.0f} MiB"
    assert parent_growth < 4 * FRAME_BYTES, f"reading grew this process by {parent_growth / 2**20:.0f} MiB"
    reference = ffmpeg_rgb_frames(testmovie, frames)
    for index, pixels in frames.items():
        assert psnr(pixels, reference[index]) >= 40
