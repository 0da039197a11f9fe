"""A streaming client that hangs up stops its generation on a live server (uvicorn on 127.0.0.1, in this
process, so the model can be told never to stop on its own)."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

import hico
from hico.embedded import embedded_path
from hico.serve.app import create_app
from hico.serve.config import ServeConfig
from serve_support import demo_video, free_port

MAX_TOKENS = 4096  # the server's limit: tens of seconds of generation if nothing stops it


def get(port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def cancelled_by_clients(port: int) -> float:
    found = re.search(rb'^hico_requests_cancelled_total\{reason="client"\} (\S+)$', get(port, "/metrics"), re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def live(tmp_path):
    """(port, decode steps so far) of a server whose model only stops at max_tokens."""
    model = hico.load(embedded_path())
    steps: list[int] = []
    step = model.model.decode_step  # the engine's one-token step: counted to see generation stop
    model.model.decode_step = lambda *args, **kwargs: steps.append(1) or step(*args, **kwargs)
    model.stop_ids = lambda: set()  # no end-of-answer token: the answer runs to max_tokens
    port = free_port()
    config = ServeConfig(port=port, allow_paths=(tmp_path,), max_tokens_limit=MAX_TOKENS)
    server = uvicorn.Server(uvicorn.Config(create_app(config, model), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield port, steps
    server.should_exit = True
    thread.join(timeout=30)


def test_a_client_that_hangs_up_mid_stream_stops_its_generation(tmp_path, live):
    port, steps = live
    demo = demo_video(tmp_path / "demo.mp4", seconds=32)
    content = [{"type": "video_url", "video_url": {"url": f"file://{demo.path}"}},
               {"type": "text", "text": "Describe the picture in the video."}]
    body = {"model": "embedded", "stream": True, "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": content}]}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    while not re.search(rb'"content": ?"[^"]', line := response.readline()):  # the answer's first text ...
        assert line, "the stream ended before any text"
    connection.sock.close()  # ... and the client goes away
    connection.close()

    deadline = time.monotonic() + 60
    while cancelled_by_clients(port) < 1:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.1)
    stopped_at = len(steps)
    time.sleep(1.0)
    assert 1 <= len(steps) == stopped_at < MAX_TOKENS  # nothing generates any more, long before max_tokens
    assert json.loads(get(port, "/health"))["queue"] == 0
