"""The browser page in a real headless Chromium (Debian's, driven by Playwright): upload the demo video with the
API key set, see the sampled-frame strip, ask, and read the embedded model's streamed answer."""

from __future__ import annotations

import os
from pathlib import Path

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
