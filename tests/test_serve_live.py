"""hico serve's live sessions (/v1/live) at the protocol level: real uvicorn servers in this process (sharing one
loaded embedded model) and the websockets client. Frames pushed through the socket answer exactly as
`Hico.live` on the same frames (and, within the budget, as `generate` on a memory of the same clips); the budget
holds; every error is a message naming the problem (then a close with its code where the session cannot go on);
the API key; a closed session's memory is let go; a chat request between live frames; and every model call, live
or chat, runs on the server's one model worker thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import io
import json
import socket
import struct
import threading
import time
import urllib.request
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")
import uvicorn
from PIL import Image
from websockets.sync.client import connect

import hico
from hico.embedded import WEIGHTS
from hico.memory import VideoMemory
from hico.serve.app import create_app
from hico.serve.cli import uvicorn_config
from hico.serve.config import ServeConfig
from hico.serve.live import LiveSession
from hico.synthetic.tasks import write_demo_video
from hico.video.preprocess import preprocess
from hico.video.reader import Video
from hico.video.sampling import SamplingOptions, time_message

QUESTION = "Describe the picture in the video."
MAX_TOKENS = 12
CONFIG = hico.GenerationConfig(max_new_tokens=MAX_TOKENS)
KEY = "live-key-0123456789"
WAIT = 60.0  # seconds for any one message on a loaded 2-core machine
WORKER = "hico-model-worker"


class ModelThreads:
    """Forward hooks on the tower and every LLM layer that note which thread runs them (paused for references)."""

    def __init__(self, model: hico.Hico) -> None:
        self.threads: set[str] = set()
        self.paused = False
        modules = [model.model.vision, model.model.llm.model.embed_tokens, *model.model.llm.model.layers]
        self.handles = [m.register_forward_pre_hook(self.note) for m in modules]

    def note(self, _module, _inputs) -> None:
        if not self.paused:
            self.threads.add(threading.current_thread().name)

    @contextlib.contextmanager
    def pause(self):
        self.paused = True
        try:
            yield
        finally:
            self.paused = False


@pytest.fixture(scope="module")
def model() -> hico.Hico:
    return hico.load(WEIGHTS)


@pytest.fixture(scope="module")
def threads(model) -> ModelThreads:
    watch = ModelThreads(model)
    yield watch
    for handle in watch.handles:
        handle.remove()


@pytest.fixture(autouse=True)
def model_work_on_the_worker_only(threads):
    threads.threads.clear()
    yield
    assert threads.threads <= {WORKER}, threads.threads


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve-live") / "stream.mp4"
    write_demo_video(path, frames=48, seed=3)
    return path


@pytest.fixture(scope="module")
def frames(demo) -> list[np.ndarray]:
    with Video(demo) as video:
        return [f.pixels for f in video.frames(video.plan(SamplingOptions.plain(num_frames=48)))]


class Running:
    """An app served by uvicorn on a thread of this process (the settings `hico serve` uses)."""

    def __init__(self, model: hico.Hico, **settings) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.config = ServeConfig(port=port, **settings)
        self.app = create_app(self.config, model)
        self.server = uvicorn.Server(uvicorn_config(self.app, self.config, "warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port}"

    @property
    def state(self):
        return self.app.state.server

    def connect(self, headers: dict | None = None, origin: str | None = None) -> Client:
        return Client(connect(self.url.replace("http", "ws") + "/v1/live", additional_headers=headers,
                              origin=origin, open_timeout=WAIT, max_size=None, legacy=True))

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=WAIT) as response:
            lines = response.read().decode().splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name)

    def wait_sessions(self, count: int) -> None:
        """Until at most `count` live sessions hold a slot (a closed one lets go of its slot on the worker)."""
        deadline = time.monotonic() + WAIT
        while self.metric("hico_live_sessions") > count:
            assert time.monotonic() < deadline, "a closed live session kept its slot"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(model):
    running = Running(model, live_sessions=2, live_queue_frames=8, live_max_frame_bytes=64 << 10,
                      live_max_frame_side=512)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def keyed(model):
    running = Running(model, api_key=KEY, live_idle_timeout=1.5)
    yield running
    running.stop()


class Client:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.sent = 0
        self.messages: list[dict] = []

    def send(self, body: dict) -> None:
        self.ws.send(json.dumps(body))

    def frame(self, pixels: np.ndarray, t: float, fmt: str = "PNG") -> None:
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, fmt)
        self.ws.send(struct.pack("<d", t) + out.getvalue())
        self.sent += 1

    def recv(self, timeout: float = WAIT) -> dict:
        message = json.loads(self.ws.recv(timeout=timeout))
        self.messages.append(message)
        return message

    def until(self, kind: str) -> list[dict]:
        """Messages up to and including the first of type `kind`; an error before it fails the test."""
        seen = []
        while True:
            message = self.recv()
            seen.append(message)
            if message["type"] == kind:
                return seen
            assert message["type"] != "error", message

    def error(self) -> dict:
        """The next error message (state messages in between are passed over)."""
        while (message := self.recv())["type"] != "error":
            assert message["type"] == "state", message
        return message

    def start(self, **options) -> dict:
        self.send({"type": "start", **options})
        return self.until("started")[-1]

    def state(self, done=lambda s: True) -> dict:
        """The first state that satisfies `done` (asking for one when none comes)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                message = self.recv(timeout=0.5)
            except TimeoutError:
                self.send({"type": "state"})
                continue
            assert message["type"] in ("state", "token", "answer"), message
            if message["type"] == "state" and done(message):
                return message
        raise AssertionError(f"no such state within {WAIT} s: {self.messages[-3:]}")

    def stream(self, frames, start: int = 0) -> None:
        """Send frames at 1 fps, one clip at a time, each after the last was taken (no queue overflows)."""
        for i in range(0, len(frames), 4):
            chunk = frames[i:i + 4]
            for k, pixels in enumerate(chunk):
                self.frame(pixels, float(start + i + k))
            taken = start + i + len(chunk)
            self.state(lambda s, taken=taken: s["frames"]["taken"] == taken)

    def ask(self, question: str = QUESTION, **options) -> tuple[str, dict]:
        """(the streamed text, the answer message)."""
        self.send({"type": "ask", "question": question, "max_tokens": MAX_TOKENS, **options})
        seen = self.until("answer")
        return "".join(m["text"] for m in seen if m["type"] == "token"), seen[-1]

    def closed(self) -> tuple[int, str]:
        """The close code and reason the server sent (messages before it are read and kept)."""
        with pytest.raises(websockets.exceptions.ConnectionClosed) as caught:
            while True:
                self.recv()
        return caught.value.rcvd.code, caught.value.rcvd.reason

    def close(self) -> None:
        self.ws.close()


def reference(model: hico.Hico, frames: list[np.ndarray], question: str = QUESTION) -> hico.Answer:
    """hico's own answer on a memory of the same whole clips, with the time message of their duration."""
    size = model.model.config.vision.image_size
    clips = [preprocess(frames[i:i + 4], size) for i in range(0, len(frames) // 4 * 4, 4)]
    count = 4 * len(clips)
    memory = VideoMemory(tokens=model.encode_clip_batch(clips), indices=list(range(count)),
                         times=[float(i) for i in range(count)], time_msg=time_message(float(count), count),
                         duration=float(count), source="frames", key="")
    return model.generate(memory, question, dropout="off", config=CONFIG)


@contextlib.contextmanager
def held_worker(running: Running):
    """The model worker kept busy (as by a long chat request) until the block ends."""
    release = threading.Event()
    running.state.worker.call(lambda: release.wait(timeout=WAIT))
    try:
        yield
    finally:
        release.set()


def test_frames_through_the_socket_answer_as_hico_live_does(server, model, frames, threads):
    with threads.pause():
        live = model.live(fps=1.0)
        for i, pixels in enumerate(frames[:22]):
            live.push(pixels, float(i))
        early = live.generate(QUESTION, config=CONFIG)
        early_state = (live.seconds, live.num_frames, live.kept_tokens, live.memory_bytes)
        memory_answer = reference(model, frames[:20])  # 5 whole clips; 2 frames wait for theirs
        for i, pixels in enumerate(frames[22:], start=22):
            live.push(pixels, float(i))
        later = live.generate("What colour is the picture?", config=CONFIG)
        later_memory_answer = reference(model, frames, "What colour is the picture?")
    assert early.text == memory_answer.text and later.text == later_memory_answer.text

    client = server.connect()
    started = client.start(fps=1)
    assert started["options"]["budget_tokens"] == 16384 and started["limits"]["queue_frames"] == 8
    client.stream(frames[:22])
    streamed, answer = client.ask()
    assert answer["text"] == streamed == early.text and answer["finish_reason"] == early.finish_reason
    assert answer["usage"]["completion_tokens"] == early.completion_tokens
    assert answer["usage"]["prompt_tokens"] == early.prompt_tokens
    assert answer["usage"]["prompt_tokens_details"]["visual_tokens"] == 5 * 64
    state = answer["state"]
    assert (state["seconds"], state["num_frames"], state["kept_tokens"], state["memory_bytes"]) == early_state
    client.stream(frames[22:], start=22)
    streamed, answer = client.ask("What colour is the picture?")
    assert answer["text"] == streamed == later.text
    assert answer["usage"]["completion_tokens"] == later.completion_tokens
    assert answer["state"]["memory_bytes"] == live.memory_bytes and answer["state"]["kept_tokens"] == 12 * 64
    assert answer["state"]["frames"] == {"received": 48, "taken": 48, "skipped": 0, "dropped": 0, "invalid": 0,
                                         "queued": 0}
    client.close()


def test_the_budget_is_never_exceeded(server, model, frames, threads):
    budget = 256
    with threads.pause():
        live = model.live(fps=1.0, budget_tokens=budget, keep_recent_clips=2)
        for i in range(80):
            live.push(frames[i % len(frames)], float(i))
        expected = live.generate(QUESTION, config=CONFIG)
    client = server.connect()
    client.start(fps=1, budget_tokens=budget, keep_recent_clips=2)
    client.stream([frames[i % len(frames)] for i in range(80)])
    streamed, answer = client.ask()
    states = [m for m in client.messages if m["type"] == "state"] + [answer["state"]]
    assert max(s["kept_tokens"] for s in states) == budget == answer["state"]["kept_tokens"]
    assert answer["usage"]["prompt_tokens_details"]["visual_tokens"] == budget
    assert answer["text"] == streamed == expected.text  # the same tokens evicted as by Hico.live
    assert answer["state"]["memory_bytes"] == live.memory_bytes and answer["state"]["num_frames"] == 80
    client.close()


def test_frames_beyond_the_queue_are_dropped_and_counted(server, frames):
    dropped_before = server.metric("hico_live_frames_total")
    client = server.connect()
    client.start(fps=2)
    with held_worker(server):
        for i in range(20):  # 2 fps: all wanted; 8 queue, 12 are dropped
            client.frame(frames[i], i / 2)
        client.send({"type": "ask", "question": QUESTION, "max_tokens": MAX_TOKENS})  # waits behind the frames
        for i in range(20, 24):
            client.frame(frames[i], i / 2)  # still full: dropped while the question waits
        state = client.state(lambda s: s["frames"]["received"] == 24)
        assert state["frames"] == {"received": 24, "taken": 0, "skipped": 0, "dropped": 16, "invalid": 0,
                                   "queued": 8}
    seen = client.until("answer")
    answer = seen[-1]
    assert answer["state"]["num_frames"] == 8 and answer["usage"]["prompt_tokens_details"]["visual_tokens"] == 128
    assert answer["state"]["seconds"] == 4.0  # 8 frames at 2 fps: the stream time of what was taken
    client.frame(frames[0], 12.0)  # the stream goes on after the drops: the next frame is taken
    assert client.state(lambda s: s["frames"]["taken"] == 9)["num_frames"] == 9
    assert server.metric("hico_live_frames_total") - dropped_before == 25
    client.close()


def test_errors_name_the_problem_and_the_session_goes_on(server, frames):
    client = server.connect()
    png = io.BytesIO()
    Image.fromarray(frames[0]).save(png, "PNG")

    client.frame(frames[0], 0.0)
    assert client.error()["code"] == "not_started"
    client.send({"type": "ask", "question": QUESTION})
    assert client.error()["code"] == "not_started"
    client.ws.send("{nope")
    assert client.error()["code"] == "invalid_json"
    client.ws.send("[1, 2]")
    assert client.error()["code"] == "invalid_message"
    client.send({"type": "dance"})
    error = client.error()
    assert error["code"] == "invalid_message" and "start, ask or state" in error["message"]
    for options, param in [({"fps": 0}, "fps"), ({"fps": 100}, "fps"), ({"fps": "fast"}, "fps"),
                           ({"budget_tokens": 10 ** 6}, "budget_tokens"), ({"colour": "red"}, "colour"),
                           ({"keep_recent_clips": 0}, "keep_recent_clips"), ({"score": "best"}, "score"),
                           ({"dropout": "bogus"}, None)]:
        client.send({"type": "start", **options})
        error = client.error()
        assert error["code"] in ("invalid_value", "invalid_type") and not error["fatal"], (options, error)
        assert error["param"] == param or param is None, (options, error)
    client.send({"type": "start", "budget_tokens": 100})  # below the 4 newest clips, which are always kept
    assert "newest clips" in client.error()["message"]

    client.start(fps=1)
    client.send({"type": "start"})
    assert client.error()["code"] == "already_started"
    client.send({"type": "ask", "question": QUESTION})
    error = client.error()
    assert error["code"] == "no_frames" and "4 frames" in error["message"]
    for message, code in [(b"\x00" * 5, "invalid_frame"), (struct.pack("<d", float("nan")) + png.getvalue(),
                                                           "invalid_frame_time"),
                          (struct.pack("<d", 0.0) + b"not an image at all", "invalid_frame"),
                          (struct.pack("<d", 0.0) + bytes(70 << 10), "frame_too_large")]:
        client.ws.send(message)
        error = client.error()
        assert error["code"] == code and not error["fatal"], (message[:20], error)
    for size, fmt, code in [((600, 8), "PNG", "frame_too_large"), ((8, 8), "GIF", "invalid_frame")]:
        client.frame(np.zeros((size[1], size[0], 3), np.uint8), 0.0, fmt)
        error = client.error()
        assert error["code"] == code, error
    for body, param in [({"question": ""}, "question"), ({"question": QUESTION, "max_tokens": 10 ** 6}, "max_tokens"),
                        ({"question": QUESTION, "history": [["only a question"]]}, "history"),
                        ({"question": QUESTION, "mood": "happy"}, "mood")]:
        client.send({"type": "ask", **body})
        error = client.error()
        assert error["param"] == param and not error["fatal"], (body, error)

    client.stream(frames[:8])  # after all of that, the session works
    with held_worker(server):
        client.send({"type": "ask", "question": QUESTION, "max_tokens": MAX_TOKENS})
        client.send({"type": "ask", "question": QUESTION})
        assert client.error()["code"] == "busy"
    answer = client.until("answer")[-1]
    assert answer["text"] and answer["state"]["frames"]["invalid"] == 7  # the one before start too
    client.ws.send(struct.pack("<d", 9.0) + bytes(2 << 20))  # far above the frame limit: the socket closes
    assert client.closed()[0] == 1009


def test_too_many_sessions_close_with_try_again_later(server, frames):
    server.wait_sessions(0)  # those of earlier tests
    first, second = server.connect(), server.connect()
    first.start()
    second.start()
    third = server.connect()
    third.send({"type": "start"})
    error = third.error()
    assert error["code"] == "too_many_sessions" and error["fatal"] and "--live-sessions" in error["message"]
    assert third.closed()[0] == 1013
    second.close()
    server.wait_sessions(1)  # the slot is free once the closed session's memory is
    fourth = server.connect()
    fourth.start()
    first.close()
    fourth.close()


def test_a_closed_session_frees_its_memory(server, frames):
    server.wait_sessions(0)
    client = server.connect()
    client.start(fps=1)
    client.stream(frames[:16])
    (session,) = server.state.live.sessions
    streams = weakref.ref(session.live)
    assert server.metric("hico_live_sessions") == 1
    assert server.metric("hico_live_memory_bytes") == session.memory_bytes > 0
    client.close()
    server.wait_sessions(0)
    del session
    gc.collect()
    assert streams() is None and server.metric("hico_live_memory_bytes") == 0


def test_a_chat_request_between_live_frames(server, model, frames, demo, threads):
    with threads.pause():
        chat_expected = model.generate(model.encode_video(demo), QUESTION, config=CONFIG).text
        live = model.live(fps=1.0)
        for i, pixels in enumerate(frames[:32]):
            live.push(pixels, float(i))
        live_expected = live.generate(QUESTION, config=CONFIG).text
    body = {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(demo.read_bytes())
                                                                                  .decode()}},
        {"type": "text", "text": QUESTION}]}], "max_tokens": MAX_TOKENS}
    chats = []

    def chat() -> None:
        request = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            chats.append(json.loads(response.read())["choices"][0]["message"]["content"])

    client = server.connect()
    client.start(fps=1)
    client.stream(frames[:16])
    asker = threading.Thread(target=chat)
    asker.start()  # the chat request is encoded and answered between the session's clips
    client.stream(frames[16:32], start=16)
    streamed, answer = client.ask()
    asker.join(timeout=WAIT)
    assert chats == [chat_expected]
    assert answer["text"] == streamed == live_expected
    assert WORKER in threads.threads  # (the watch saw the work it checks)
    client.close()


def test_the_api_key(keyed, frames):
    client = keyed.connect()
    client.frame(frames[0], 0.0)  # before the key
    error = client.error()
    assert error["code"] == "invalid_api_key" and error["fatal"] and "api_key" in error["message"]
    assert client.closed() == (1008, "invalid_api_key")
    for start in ({"type": "start"}, {"type": "start", "api_key": "wrong-key-0123456789"},
                  {"type": "start", "api_key": 12345}):
        client = keyed.connect()
        client.send(start)
        assert client.error()["code"] == "invalid_api_key" and client.closed()[0] == 1008
    client = keyed.connect(headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert client.error()["code"] == "invalid_api_key" and client.closed()[0] == 1008

    client = keyed.connect(headers={"Authorization": f"Bearer {KEY}"})
    assert client.start()["type"] == "started"
    client.close()
    client = keyed.connect()
    assert client.start(api_key=KEY)["type"] == "started"
    client.close()
    with pytest.raises(websockets.exceptions.InvalidStatus) as caught:  # another site's page: refused at once
        keyed.connect(origin="http://evil.example")
    assert caught.value.response.status_code == 403


def test_an_idle_session_is_closed(keyed):
    client = keyed.connect()
    client.start(api_key=KEY)
    error = client.error()  # nothing sent for --live-idle-timeout (1.5 s here)
    assert error["code"] == "idle_timeout" and error["fatal"]
    assert client.closed()[0] == 4408


def test_live_sessions_can_be_turned_off(model):
    off = Running(model, live_sessions=0)
    try:
        client = off.connect()
        client.send({"type": "start"})
        error = client.error()
        assert error["code"] == "live_unavailable" and "--live-sessions 0" in error["message"]
        assert client.closed()[0] == 1008
    finally:
        off.stop()


def test_a_client_that_reads_nothing_never_holds_up_the_worker():
    """The worker posts to a session without waiting; a socket whose sends never complete (a client that reads
    nothing, its TCP window shut) lets its messages pile up to a bound, then the session is closed (1008)."""

    class StuckSocket:
        def __init__(self) -> None:
            self.headers: dict = {}
            self.closed_with: int | None = None

        async def accept(self) -> None:
            pass

        async def receive(self) -> dict:
            await asyncio.Event().wait()  # the client sends nothing more

        async def send_text(self, _text: str) -> None:
            await asyncio.Event().wait()  # and reads nothing: the first send never completes

        async def close(self, code: int, reason: str = "") -> None:
            self.closed_with = code

    async def scenario() -> tuple[float, StuckSocket]:
        socket_ = StuckSocket()
        config = ServeConfig(max_tokens_limit=16, default_max_tokens=16)
        session = LiveSession(SimpleNamespace(config=config), socket_)
        running = asyncio.ensure_future(session.run())
        await asyncio.sleep(0.05)
        start = time.monotonic()
        worker = threading.Thread(target=lambda: [session._post(session._send, {"type": "token", "text": "x"})
                                                  for _ in range(2000)])
        worker.start()
        worker.join(timeout=WAIT)
        posted = time.monotonic() - start
        await asyncio.wait_for(running, timeout=WAIT)
        return posted, socket_

    posted, socket_ = asyncio.run(scenario())
    assert posted < 5.0  # 2,000 posts, none waited for the client
    assert socket_.closed_with == 1008


def test_the_live_options_of_hico_serve(monkeypatch):
    import hico.cli
    import hico.serve.cli

    seen = []
    monkeypatch.setattr(hico.cli, "load_model", lambda args: None)
    monkeypatch.setattr(hico.serve.cli, "serve", lambda config, model, log_level: seen.append(config))
    assert hico.cli.main(["serve", "--live-sessions", "0", "--live-max-tokens", "4096", "--live-max-frame-mb", "0.5",
                          "--live-queue-frames", "32", "--live-idle-timeout", "5"]) == 0
    (config,) = seen
    assert (config.live_sessions, config.live_max_tokens, config.live_max_frame_bytes, config.live_queue_frames,
            config.live_idle_timeout) == (0, 4096, 1 << 19, 32, 5.0)
    assert uvicorn_config(None, config).ws_max_size == (1 << 19) + (1 << 20)
    assert hico.cli.main(["serve", "--live-queue-frames", "0"]) == 2  # a clear one-line error, exit 2
