"""The browser page in a real headless Chromium (Debian's, driven by Playwright): upload the demo video with the
API key set, see the sampled-frame strip, ask, and read the embedded model's streamed answer; and the live mode,
with Chromium's fake camera playing a video made from the demo, answered while it streams."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("the page test needs Debian's Chromium: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from serve_support import demo_video, start_server

KEY = "page-key-0123456789"
# no GPU, no network beyond loopback, no first-run or background chatter
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
WAIT_MS = 120_000  # upload + encode + answer on a loaded 2-core machine
CAMERA_FPS = 4  # the fake camera's frame rate, and the live session's


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-page")


@pytest.fixture(scope="module")
def server(folder):
    live = start_server(folder, key=KEY)
    yield live
    live.stop()


def test_upload_ask_and_watch_the_answer_stream(server, folder):
    demo = demo_video(folder / "demo.mp4", seed=0)
    requested = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(folder / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1200, "height": 760})
        try:
            page = context.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.goto(server.url + "/")
            page.fill("#key", KEY)
            page.dispatch_event("#key", "change")
            page.wait_for_function("document.getElementById('model-name').textContent === 'hico-embedded'",
                                   timeout=WAIT_MS)
            page.set_input_files("#file", str(demo.path))
            page.wait_for_selector("#strip img", timeout=WAIT_MS)
            assert "96 frames of 96.00 s" in page.text_content("#plan")
            assert page.locator("#strip img").count() == 16
            page.fill("#question", "Describe the picture in the video.")
            page.click("#send")
            page.wait_for_selector(".turn.assistant .meta", timeout=WAIT_MS)
            answer = page.text_content(".turn.assistant .text")
            assert demo.colour in answer and demo.shape in answer, answer
            meta = page.text_content(".turn.assistant .meta")
            assert "1536 visual" in meta and "first token" in meta, meta
            page.fill("#question", "What colour is it?")  # a second turn: the video is reused, not re-encoded
            page.click("#send")
            page.wait_for_function("document.querySelectorAll('.turn.assistant .meta').length === 2",
                                   timeout=WAIT_MS)
            assert "video reused" in page.locator(".turn.assistant .meta").nth(1).text_content()
            page.fill("#question", "Describe the picture in the video.")  # left typed for the screenshot
            shot = os.environ.get("HICO_SERVE_SCREENSHOT") or str(folder / "serve-page.png")
            page.screenshot(path=shot, full_page=True)
        finally:
            context.close()
    assert Path(shot).stat().st_size > 10_000
    foreign = [url for url in requested if not url.startswith((server.url, "data:"))]
    assert not foreign, foreign  # no CDN, nothing beyond this server


def fake_camera(demo, out: Path) -> Path:
    """A y4m file for Chromium's fake camera: the demo video at CAMERA_FPS (one of its 1 fps frames per camera frame),
    its picture held for 3 clips so that whole clips of the session show it whatever the phase, scaled to 256 px
    (chroma subsampling and JPEG would smear the 64 px picture)."""
    from hico.video.reader import Video
    from hico.video.sampling import SamplingOptions

    with Video(demo.path) as video:
        frames = [f.pixels for f in video.frames(video.plan(SamplingOptions.plain(num_frames=32)))]
    shown = frames[:demo.first] + [frames[demo.first]] * 12 + frames[demo.first + 4:]
    size = f"{shown[0].shape[1]}x{shown[0].shape[0]}"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size,
                    "-r", str(CAMERA_FPS), "-i", "-", "-vf", "scale=256:256:flags=neighbor", "-pix_fmt", "yuv420p",
                    str(out)], input=np.stack(shown).tobytes(), check=True, timeout=60)
    return out


def test_live_mode_streams_the_camera_and_answers(server, folder):
    if shutil.which("ffmpeg") is None:
        pytest.skip("the fake camera's video is made with ffmpeg: apt-get install -y ffmpeg")
    demo = demo_video(folder / "camera.mp4", seed=0, seconds=32)
    camera = fake_camera(demo, folder / "camera.y4m")
    frames = 40  # 10 s at 4 fps: every frame of the camera's 10 s loop, the picture among them
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(folder / "chromium-live-profile"), executable_path=str(CHROMIUM), headless=True,
            args=[*FLAGS, "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}",
                  "--use-fake-ui-for-media-stream"], viewport={"width": 1200, "height": 760})
        try:
            context.grant_permissions(["camera"], origin=server.url)
            page = context.new_page()
            page.goto(server.url + "/")
            page.fill("#key", KEY)
            page.dispatch_event("#key", "change")
            page.wait_for_function("document.getElementById('model-name').textContent === 'hico-embedded'",
                                   timeout=WAIT_MS)
            page.click("#mode-live")
            page.fill("#live-fps", str(CAMERA_FPS))
            page.click("#live-start")
            page.wait_for_function(f"Number(document.getElementById('live-state').dataset.frames) >= {frames}",
                                   timeout=WAIT_MS)
            assert "s seen" in page.text_content("#live-state")
            page.fill("#question", "Describe the picture in the video.")
            page.click("#send")
            page.wait_for_selector(".turn.assistant .meta", timeout=WAIT_MS)
            answer = page.text_content(".turn.assistant .text")
            meta = page.text_content(".turn.assistant .meta")
            state = page.text_content("#live-state")
            page.click("#live-stop")
        finally:
            context.close()
    assert demo.colour in answer and demo.shape in answer, (answer, meta, state)
    assert "s of stream seen" in meta and "first token" in meta, meta
    assert "dropped" not in state, state
