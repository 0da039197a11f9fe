"""Shared test media, written once per test session into a temporary folder (never downloaded, never committed).

Every video frame i shows the frame code i (`hico.synthetic.videos.read_frame_code`), so a test can tell exactly
which source frame a decoder returned. Frames are small (128x80, a 12-bit code) to keep the session fast.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import av
import pytest

from hico.synthetic import videos

WIDTH, HEIGHT = 128, 80
BITS = 12
FPS = 30.0

LONG_FRAMES, LONG_GOP = 400, 50  # the H.264 file: 8 GOPs, so seeking and one forward pass really differ
SHORT_FRAMES, SHORT_GOP = 90, 30
ROTATED_FRAMES = 30
GIF_FRAMES, GIF_FRAME_MS = 20, 100
FOLDER_FRAMES = 12  # img_1 ... img_12: lexicographic order would put img_10 before img_2

# Variable frame rate: irregular gaps from 1 to 8 frame periods of 30 fps. The synthetic writer's encoder
# runs at 1/fps ticks, so the times are whole multiples of 1/30 s (anything else is rounded on encoding).
VFR_TICKS = (0, 1, 3, 4, 9, 10, 15, 21, 22, 27, 30, 31, 33, 40, 41, 42, 50, 58, 59, 60)
VFR_TIMES = tuple(t / FPS for t in VFR_TICKS)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


def _write(path: Path, frames: int, **kwargs) -> Path:
    kwargs = {"width": WIDTH, "height": HEIGHT, "bits": BITS, "fps": FPS, **kwargs}
    return videos.write_video(path, frames, **kwargs)


@pytest.fixture(scope="session")
def h264_mp4(media: Path) -> Path:
    return _write(media / "long_gop.mp4", LONG_FRAMES, gop=LONG_GOP)


@pytest.fixture(scope="session")
def mpeg4_avi(media: Path) -> Path:
    return _write(media / "mpeg4.avi", SHORT_FRAMES, codec="mpeg4", gop=SHORT_GOP)


@pytest.fixture(scope="session")
def vp9_webm(media: Path) -> Path:
    try:
        av.codec.Codec("libvpx-vp9", "w")
    except Exception:
        pytest.skip("the bundled FFmpeg has no libvpx-vp9 encoder")
    return _write(media / "vp9.webm", SHORT_FRAMES, codec="libvpx-vp9", gop=SHORT_GOP)


@pytest.fixture(scope="session")
def vfr_mp4(media: Path) -> Path:
    return _write(media / "vfr.mp4", len(VFR_TIMES), frame_times=VFR_TIMES)


@pytest.fixture(scope="session")
def rotated_mp4(media: Path) -> Path:
    return _write(media / "rotated.mp4", ROTATED_FRAMES, rotation=90)


@pytest.fixture(scope="session")
def one_frame_mp4(media: Path) -> Path:
    return _write(media / "one_frame.mp4", 1)


@pytest.fixture(scope="session")
def gif_file(media: Path) -> Path:
    return videos.write_gif(media / "anim.gif", GIF_FRAMES, width=WIDTH, height=HEIGHT, frame_ms=GIF_FRAME_MS,
                           bits=BITS)


@pytest.fixture(scope="session")
def frame_folder(media: Path) -> Path:
    return videos.write_frame_folder(media / "frames", FOLDER_FRAMES, width=WIDTH, height=HEIGHT, bits=BITS)


@pytest.fixture(scope="session")
def audio_only(media: Path) -> Path:
    return videos.write_audio_only(media / "audio_only.m4a", seconds=0.5)


# The real-video corpus (tests/realvideo/fetch): files no one in this project made, with FFmpeg as the oracle.
REALVIDEO = Path(os.environ.get("HICO_REALVIDEO", Path(__file__).resolve().parents[1] / "build" / "realvideo"))


_FETCHED: list[str] = []  # the fetch's outcome, once per test session: "" when the corpus is there, else why not


def fetch_realvideo() -> str:
    """Fetch the corpus (a no-op when it is complete); "" on success, else the reason it could not be had."""
    if not _FETCHED:
        fetch = Path(__file__).resolve().parent / "realvideo" / "fetch"
        result = subprocess.run([str(fetch), str(REALVIDEO)], capture_output=True, text=True)
        ok = result.returncode == 0 and (REALVIDEO / "manifest.tsv").exists()
        _FETCHED.append("" if ok else f"the real-video corpus could not be fetched into {REALVIDEO}: "
                        f"{result.stderr.strip()[-300:]}")
    return _FETCHED[0]


@pytest.fixture(scope="session")
def realvideo() -> Path:
    """The corpus folder, fetched on first use. Under CI a corpus that cannot be had fails the run; elsewhere
    (no network to Debian's registry, no ffprobe) the tests that need it are skipped with the reason."""
    reason = fetch_realvideo()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return REALVIDEO
