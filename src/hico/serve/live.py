"""Live video sessions: a WebSocket at `/v1/live` takes a stream's frames as it plays and answers questions about
everything seen so far, through `hico.live.LiveVideo` on the server's one model worker.

The protocol. Text messages are JSON objects with a `type`; binary messages are frames.

client -> server
  {"type": "start", "fps": 1.0, "budget_tokens": 16384, "keep_recent_clips": 4, "dropout": "off",
   "score": "value_norm", "seed": 0, "api_key": "KEY"}
      Opens the session; every field may be left out. `fps`: frames taken per second of stream time (at most 30);
      `budget_tokens`: visual tokens kept in the KV cache, at most (and by default) the server's --live-max-tokens,
      so every session's memory is bounded; `api_key`: when the server has a key and the handshake carried no
      `Authorization: Bearer KEY` header (a browser cannot set one on a WebSocket).
  binary: one frame = 8 bytes, its time in seconds (a little-endian IEEE 754 double), then a JPEG or PNG image
      (at most --live-max-frame-mb, its longer side at most 4096 px). Frames are taken at the session's fps as
      `LiveVideo.push` takes them (the first, then the first at or after each 1/fps step); the others are skipped.
      Taken frames wait for the model in a queue of --live-queue-frames; a frame that finds it full is dropped
      and counted (state.frames.dropped), and the next frame takes its place in the stream: the stream stays
      live when the model falls behind, the client is never slowed down.
  {"type": "ask", "question": "...", "history": [["an earlier question", "its answer"], ...], "max_tokens": 512,
   "temperature": 0, "top_p": 1, "seed": null, "stop": ["..."]}
      A question about every whole clip (4 taken frames) that arrived before it; one at a time. Frames keep
      arriving (and queueing) while its answer streams.
  {"type": "state"}: the session's state now.

server -> client
  {"type": "started", "session": ID, "model": NAME, "options": {...}, "limits": {...}}
  {"type": "state", "seconds", "num_frames", "kept_tokens", "memory_bytes",
   "frames": {"received", "taken", "skipped", "dropped", "invalid", "queued"}}
      after frames were taken (only the latest is sent when several wait), and when asked for. `seconds`: the
      stream time the taken frames cover (num_frames / fps).
  {"type": "token", "text": "..."}: the answer as it grows
  {"type": "answer", "text", "finish_reason", "usage": {...}, "state": {...}}: the whole answer
  {"type": "error", "code", "message", "param", "fatal"}: what went wrong and what to do; `fatal`: a close follows

Close codes: 1000 normal; 1008 missing or wrong API key, or live sessions off (--live-sessions 0) or not offered by
this engine, or a client that does not read its messages; 1009 a message far above the frame limit (closed by
the server library before the session sees it); 1011 internal error; 1013 too many live sessions (try again
later); 4408 nothing sent for --live-idle-timeout seconds while no answer was pending.

All model work of a session (starting its cache, encoding and prefilling clips, answering) runs as tasks on the
model worker, in one queue with chat requests; the event loop only parses messages and decodes images. A session's
memory (its KV cache and tokens) is let go once its socket closes, after the tasks it had queued.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import logging
import math
import struct
import threading
import time
import uuid

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket

from hico.errors import HicoError, OptionError
from hico.generate import GenerationConfig
from hico.live import SCORES, LiveOptions
from hico.serve.auth import check_key
from hico.serve.errors import ApiError, bad_request
from hico.serve.protocol import MAX_TEXT_CHARS, _number, generation_config, usage

log = logging.getLogger("hico.serve")
FRAME_TIME = struct.Struct("<d")  # the header of a frame message: its time in seconds
MAX_FPS = 30.0
MAX_TEXT_BYTES = 256 << 10  # a JSON text message
START_KEYS = ("type", "api_key", "fps", "budget_tokens", "keep_recent_clips", "dropout", "score", "seed")
ASK_KEYS = ("type", "question", "history", "max_tokens", "temperature", "top_p", "seed", "stop")
FLUSH_SECONDS = 10.0  # a fatal error and its close frame get this long to reach the client

CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER, CLOSE_IDLE = 1008, 1011, 1013, 4408  # RFC 6455; 4408: private


class LiveSlots:
    """The server's live sessions, at most `limit` at once; a slot is held until its session's memory is freed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sessions: set[LiveSession] = set()
        self._lock = threading.Lock()

    def acquire(self, session: LiveSession) -> bool:
        with self._lock:
            if len(self.sessions) >= self.limit:
                return False
            self.sessions.add(session)
            return True

    def release(self, session: LiveSession) -> None:
        with self._lock:
            self.sessions.discard(session)

    def count(self) -> int:
        return len(self.sessions)

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(session.memory_bytes for session in self.sessions)


class FrameRate:
    """Which frames a stream at `fps` takes: the first, then the first at or after each 1/fps step from it (the rule
    of `LiveVideo.push`, applied before a frame is decoded or queued; a frame not queued does not advance it)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.first: float | None = None
        self.taken = 0

    def wants(self, t: float) -> bool:
        return self.first is None or t >= self.first + self.taken / self.fps - 1e-9

    def take(self, t: float) -> None:
        if self.first is None:
            self.first = t
        self.taken += 1


def parse_start(body: dict, max_tokens: int, schedule) -> tuple[LiveOptions, object]:
    """(LiveOptions, dropout setting) of a start message; a 400 ApiError names the first bad field. `schedule` is
    the engine's `schedule` (it checks a dropout setting against the model)."""
    unknown = sorted(set(body) - set(START_KEYS))
    if unknown:
        raise bad_request(f"unknown start field(s) {', '.join(unknown)[:200]}; known: {', '.join(START_KEYS[2:])}",
                          "invalid_value", unknown[0][:100])
    fps = _number(body, "fps", 0, MAX_FPS, default=1.0)
    if fps <= 0:
        raise bad_request(f"fps must be above 0 (frames per second, at most {MAX_FPS:g})", "invalid_value", "fps")
    budget = _number(body, "budget_tokens", 1, max_tokens, integer=True, default=max_tokens)
    keep = _number(body, "keep_recent_clips", 1, 1 << 20, integer=True, default=4)
    seed = _number(body, "seed", 0, 2 ** 63 - 1, integer=True, default=0)
    score = body.get("score", "value_norm")
    if score not in SCORES:
        raise bad_request(f"score must be one of {', '.join(SCORES)}", "invalid_value", "score")
    dropout = body.get("dropout", "off")
    try:
        schedule(dropout)
        options = LiveOptions(fps=float(fps), budget_tokens=budget, keep_recent_clips=keep, score=score, seed=seed)
    except OptionError as exc:
        raise bad_request(str(exc), "invalid_value", "dropout" if "dropout" in str(exc) else None) from None
    return options, dropout


def parse_ask(body: dict, max_tokens_limit: int, default_max_tokens: int):
    """(question, history, GenerationConfig) of an ask message; a 400 ApiError names the first bad field. As in
    chat requests, no temperature means greedy decoding (the model card's setting)."""
    unknown = sorted(set(body) - set(ASK_KEYS))
    if unknown:
        raise bad_request(f"unknown ask field(s) {', '.join(unknown)[:200]}; known: {', '.join(ASK_KEYS[1:])}",
                          "invalid_value", unknown[0][:100])
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad_request("question must be a non-empty string", "invalid_value", "question")
    history = body.get("history") or []
    if not isinstance(history, list) or not all(
            isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn) for turn in history):
        raise bad_request("history must be a list of [question, answer] string pairs", "invalid_type", "history")
    if len(question) + sum(len(q) + len(a) for q, a in history) > MAX_TEXT_CHARS:
        raise bad_request(f"the question and history hold more than {MAX_TEXT_CHARS} characters",
                          "context_length_exceeded", "history")
    config = generation_config(body, max_tokens_limit, default_max_tokens)
    return question.strip(), tuple((q, a) for q, a in history), config


def decode_frame(data: bytes, max_side: int) -> np.ndarray:
    """A JPEG or PNG image -> (H, W, 3) RGB uint8; a 400 ApiError for anything else (its size is checked before
    its pixels are decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise bad_request(f"a frame is a JPEG or PNG image, this one is {image.format}", "invalid_frame")
            if max(image.size) > max_side:
                raise bad_request(f"the frame is {image.size[0]}x{image.size[1]} pixels; its longer side may be at "
                                  f"most {max_side}: scale it down", "frame_too_large")
            return np.asarray(image.convert("RGB"))
    except ApiError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # what PIL raises on broken images
        raise bad_request("the frame is not a readable JPEG or PNG image", "invalid_frame") from None


class _Close:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


_STATE = object()  # in the outbox: send the session's latest state


class LiveSession:
    """One `/v1/live` socket. The event loop runs `run` (receive, parse, decode, queue frames; send what the worker
    posts); the model worker runs the tasks the session gives it (`_create`, `_ingest_task`, `_answer`,
    `_release`), which post their results back through `loop.call_soon_threadsafe`, never waiting on the client."""

    def __init__(self, server, websocket: WebSocket) -> None:
        self.server = server
        self.config = server.config
        self.ws = websocket
        self.loop = asyncio.get_running_loop()
        self.id = f"live-{uuid.uuid4().hex[:16]}"
        self.outbox: asyncio.Queue = asyncio.Queue(maxsize=self.config.max_tokens_limit + 512)
        self.authed = self.config.api_key is None
        self.started = False
        self.asking = False
        self.ending = False  # a fatal error was posted: nothing more is read
        self.closed = threading.Event()  # the socket is gone: queued tasks do nothing, a generation stops
        self.options: LiveOptions | None = None
        self.rate: FrameRate | None = None
        self.live = None  # the LiveVideo, made and used on the worker only
        self.frames: collections.deque = collections.deque()  # (pixels, t) taken, waiting for the worker
        self.counts = dict.fromkeys(("received", "taken", "skipped", "dropped", "invalid"), 0)
        self.memory_bytes = 0
        self._live_state = {"seconds": 0.0, "num_frames": 0, "kept_tokens": 0, "memory_bytes": 0}
        self._state_pending = False
        self._ingest_queued = False
        self._ingest_lock = threading.Lock()
        self._tasks: list[asyncio.Future] = []

    # --- the socket (event loop) -------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.ws.accept()
        header = self.ws.headers.get("authorization")
        if self.config.api_key is not None and header is not None:
            try:
                check_key(header, self.config.api_key)
                self.authed = True
            except ApiError as exc:
                self._fail(exc.code, exc.message, CLOSE_POLICY)
        receiver = asyncio.ensure_future(self._receive_loop())
        sender = asyncio.ensure_future(self._send_loop())
        self._tasks = [receiver, sender]
        try:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            if self.ending and not sender.done():  # a fatal error: let its message and the close go out
                await asyncio.wait([sender], timeout=FLUSH_SECONDS)
        finally:
            self.closed.set()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.started:
                self.server.worker.call(self._release)
        if self.outbox.full():  # a client that reads nothing: the close frame may not reach it either
            with contextlib.suppress(Exception):  # the connection is being dropped anyway
                await asyncio.wait_for(self.ws.close(CLOSE_POLICY, "slow_client"), timeout=1.0)

    async def _receive_loop(self) -> None:
        while not self.ending:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=self.config.live_idle_timeout)
            except TimeoutError:
                if self.asking:
                    continue
                self._fail("idle_timeout", f"nothing received for {self.config.live_idle_timeout:g} s; a session "
                                           "is closed when it sends no frames or questions that long "
                                           "(--live-idle-timeout)", CLOSE_IDLE)
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await self._on_frame(message["bytes"])
            elif message.get("text") is not None:
                self._on_text(message["text"])

    async def _send_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            if item is _STATE:
                self._state_pending = False
                item = {"type": "state", **self.state()}
            if isinstance(item, _Close):
                await self.ws.close(item.code, item.reason)
                return
            await self.ws.send_text(json.dumps(item))

    def _send(self, message) -> None:
        """Queue a message for the client (event loop only); a client that lets the queue fill is closed."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            if not self.ending:
                log.warning("live session %s: the client does not read its messages; closing it", self.id)
                self.ending = True
                self.closed.set()
                for task in self._tasks:  # `run` ends the session
                    task.cancel()

    def _error(self, exc: ApiError) -> None:
        self._send({"type": "error", "code": exc.code, "message": exc.message, "param": exc.param, "fatal": False})

    def _fail(self, code: str, message: str, close: int) -> None:
        """A fatal error: say what and why, then close with `close`; nothing more is read."""
        if self.ending:
            return
        self._send({"type": "error", "code": code, "message": message, "param": None, "fatal": True})
        self._send(_Close(close, code))
        self.ending = True

    def state(self) -> dict:
        """The session's state: the stream as the worker last reported it, the frame counts as they are now."""
        return {**self._live_state, "frames": {**self.counts, "queued": len(self.frames)}}

    def _on_text(self, text: str) -> None:
        if len(text) > MAX_TEXT_BYTES:
            return self._error(bad_request(f"a text message may hold {MAX_TEXT_BYTES} bytes at most",
                                           "message_too_large"))
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            return self._error(bad_request('a text message is a JSON object, e.g. {"type": "ask", "question": '
                                           '"What is happening?"}; this one is not valid JSON', "invalid_json"))
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return self._error(bad_request('a text message is a JSON object with a "type": start, ask or state',
                                           "invalid_message", "type"))
        kind = body["type"]
        if not self.authed and kind != "start":
            return self._unauthorized()
        if kind == "start":
            self._start(body)
        elif kind == "ask":
            self._ask(body)
        elif kind == "state":
            self._announce_state()
        else:
            self._error(bad_request(f"unknown message type {kind[:40]!r}; send start, ask or state (frames are "
                                    "binary messages)", "invalid_message", "type"))

    def _unauthorized(self) -> None:
        self._fail("invalid_api_key", 'missing or wrong API key: send it as {"type": "start", "api_key": KEY} first '
                                      "(or as the header `Authorization: Bearer KEY`)", CLOSE_POLICY)

    def _start(self, body: dict) -> None:
        if self.started:
            return self._error(bad_request("the session has started already; open another socket for a new stream",
                                           "already_started"))
        if not self.authed:
            key = body.get("api_key")
            try:
                check_key(f"Bearer {key}" if isinstance(key, str) else None, self.config.api_key)
            except ApiError:
                return self._unauthorized()
            self.authed = True
        model = self.server.model
        if self.config.live_sessions == 0 or not hasattr(model, "live"):
            why = "--live-sessions 0" if self.config.live_sessions == 0 else "this engine has no live video"
            return self._fail("live_unavailable", f"this server takes no live sessions ({why})", CLOSE_POLICY)
        try:
            options, dropout = parse_start(body, self.config.live_max_tokens, model.schedule)
        except ApiError as exc:
            return self._error(exc)
        if not self.server.live.acquire(self):
            return self._fail("too_many_sessions", f"the server has {self.config.live_sessions} live sessions open "
                                                   "(--live-sessions); try again when one closes", CLOSE_TRY_LATER)
        self.started, self.options, self.rate = True, options, FrameRate(options.fps)
        self.server.metrics.live_opened.inc()
        self.server.worker.call(lambda: self._create(dropout))

    def _ask(self, body: dict) -> None:
        if not self.started:
            return self._error(bad_request('send {"type": "start", ...} first, then frames, then questions',
                                           "not_started"))
        if self.asking:
            return self._error(bad_request("an answer is still streaming; ask again after its answer message",
                                           "busy"))
        try:
            question, history, config = parse_ask(body, self.config.max_tokens_limit, self.config.default_max_tokens)
        except ApiError as exc:
            return self._error(exc)
        self.asking = True
        deadline = time.monotonic() + self.config.request_timeout
        self.server.worker.call(lambda: self._answer(question, history, config, deadline))

    async def _on_frame(self, data: bytes) -> None:
        self.counts["received"] += 1
        if not self.authed:
            return self._unauthorized()
        problem = self._frame_problem(data)
        if problem is not None:
            self._count("invalid")
            return self._error(problem)
        t = FRAME_TIME.unpack_from(data)[0]
        if not self.rate.wants(t):
            return self._count("skipped")
        if len(self.frames) >= self.config.live_queue_frames:
            return self._count("dropped")
        try:
            pixels = await run_in_threadpool(decode_frame, data[FRAME_TIME.size:], self.config.live_max_frame_side)
        except ApiError as exc:
            self._count("invalid")
            return self._error(exc)
        self.rate.take(t)
        self.frames.append((pixels, t))
        self._schedule_ingest()

    def _frame_problem(self, data: bytes) -> ApiError | None:
        if not self.started:
            return bad_request('send {"type": "start", ...} before frames', "not_started")
        if len(data) <= FRAME_TIME.size:
            return bad_request("a frame message is 8 bytes of its time in seconds (little-endian float64), then "
                               "the JPEG or PNG image", "invalid_frame")
        size = len(data) - FRAME_TIME.size
        if size > self.config.live_max_frame_bytes:
            return bad_request(f"the frame has {size} bytes, more than the server takes "
                               f"({self.config.live_max_frame_bytes}, --live-max-frame-mb): scale it down or "
                               "compress it more", "frame_too_large")
        t = FRAME_TIME.unpack_from(data)[0]
        if not math.isfinite(t):
            return bad_request(f"the frame's time must be a finite number of seconds, got {t}", "invalid_frame_time")
        return None

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.server.metrics.live_frames.labels(outcome).inc()

    # --- from the worker -------------------------------------------------------------------------------------
    def _post(self, callback, *args) -> None:
        """Run `callback(*args)` on the event loop (from the worker thread); never waits."""
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop has closed: nobody listens any more
            self.closed.set()

    def _stream_state(self, live) -> dict:
        """The stream's state now (worker thread); its memory is kept for the server's gauge."""
        self.memory_bytes = live.memory_bytes
        return {"seconds": round(live.seconds, 6), "num_frames": live.num_frames, "kept_tokens": live.kept_tokens,
                "memory_bytes": self.memory_bytes}

    def _report(self, live) -> None:
        """A state message about the stream goes out (worker thread)."""
        self._post(self._set_state, self._stream_state(live))

    def _set_state(self, state: dict) -> None:
        self._live_state = state
        self._announce_state()

    def _announce_state(self) -> None:
        """A state message goes out (one, with the state at the moment it is sent, however many are asked for)."""
        if not self._state_pending and not self.ending:
            self._state_pending = True
            self._send(_STATE)

    def _post_fatal(self, code: str, message: str, close: int) -> None:
        self._post(self._fail, code, message, close)

    def _schedule_ingest(self) -> None:
        with self._ingest_lock:
            if self._ingest_queued or self.closed.is_set():
                return
            self._ingest_queued = True
        self.server.worker.call(self._ingest_task)

    def _create(self, dropout) -> None:
        if self.closed.is_set():
            return
        options = self.options
        try:
            self.live = self.server.model.live(fps=options.fps, budget_tokens=options.budget_tokens,
                                               dropout=dropout, keep_recent_clips=options.keep_recent_clips,
                                               score=options.score, seed=options.seed)
        except HicoError as exc:
            return self._post_fatal("invalid_value", str(exc), CLOSE_POLICY)
        except Exception:
            log.exception("live session %s could not start", self.id)
            return self._post_fatal("internal_error", "internal server error (the server log has the details)",
                                    CLOSE_INTERNAL)
        started = {"type": "started", "session": self.id, "model": self.server.name,
                   "options": {"fps": options.fps, "budget_tokens": options.budget_tokens,
                               "keep_recent_clips": options.keep_recent_clips, "score": options.score,
                               "seed": options.seed, "dropout": dropout},
                   "limits": {"max_frame_bytes": self.config.live_max_frame_bytes,
                              "max_frame_side": self.config.live_max_frame_side,
                              "queue_frames": self.config.live_queue_frames,
                              "idle_timeout": self.config.live_idle_timeout,
                              "max_tokens": self.config.max_tokens_limit,
                              "frames_per_clip": self.live.clip}}
        self._post(self._send, started)
        self._report(self.live)

    def _ingest_task(self) -> None:
        with self._ingest_lock:
            self._ingest_queued = False
        self._ingest(self.live.clip if self.live is not None else 0)
        if self.frames and not self.closed.is_set():  # one clip per turn: chat requests are not held up long
            self._schedule_ingest()

    def _ingest(self, limit: int | None) -> None:
        """Push up to `limit` queued frames (None: all) into the stream (worker thread)."""
        live = self.live
        if live is None or self.closed.is_set():
            return
        pushed = 0
        try:
            while self.frames and (limit is None or pushed < limit):
                pixels, t = self.frames.popleft()
                pushed += 1
                self._post(self._count, "taken" if live.push(pixels, t) else "skipped")
        except HicoError as exc:
            self.live = None
            return self._post_fatal("stream_refused", str(exc), CLOSE_POLICY)
        except Exception:
            log.exception("live session %s: a frame failed", self.id)
            self.live = None
            return self._post_fatal("internal_error", "internal server error (the server log has the details)",
                                    CLOSE_INTERNAL)
        if pushed:
            self._report(live)

    def _answer(self, question: str, history, config: GenerationConfig, deadline: float) -> None:
        try:
            self._ingest(None)  # the question is about every frame that arrived before it
            live = self.live
            if live is None or self.closed.is_set():
                return
            if live.kept_tokens == 0:
                return self._post(self._error, bad_request(
                    f"no whole clip yet: a question needs {live.clip} frames of the stream ({live.num_frames} "
                    "taken so far); send frames and ask again", "no_frames"))
            first = True

            def on_token(piece: str) -> None:
                nonlocal first
                if first:  # as chat answers: the leading whitespace is not shown
                    if not piece.strip():
                        return
                    first, piece = False, piece.lstrip()
                self._post(self._send, {"type": "token", "text": piece})

            answer = live.generate(question, history, config=config, on_token=on_token,
                                   cancel=lambda: self.closed.is_set() or time.monotonic() > deadline)
            if self.closed.is_set():
                return
            if answer.finish_reason == "cancelled":
                limit = self.config.request_timeout
                return self._post(self._error, ApiError(504, f"the answer took longer than {limit:g} s "
                                                             "(--request-timeout)", "request_timeout"))
            self.server.metrics.live_questions.inc()
            self.server.metrics.completion_tokens.inc(answer.completion_tokens)
            counts = usage(answer.prompt_tokens, answer.completion_tokens, answer.visual_tokens)
            self._post(self._send_answer, {"type": "answer", "text": answer.text,
                                           "finish_reason": answer.finish_reason, "usage": counts},
                       self._stream_state(live))
        except HicoError as exc:  # the engine's own words on a question it cannot take (e.g. an empty one)
            self._post(self._error, bad_request(str(exc), "invalid_request", "question"))
        except Exception:
            log.exception("live session %s: a question failed", self.id)
            self._post_fatal("internal_error", "internal server error (the server log has the details)",
                             CLOSE_INTERNAL)
        finally:
            self._post(self._answered)

    def _send_answer(self, message: dict, state: dict) -> None:
        self._live_state = state
        self._send({**message, "state": self.state()})

    def _answered(self) -> None:
        self.asking = False

    def _release(self) -> None:
        """Let go of the stream's memory (worker thread, after every task the session had queued)."""
        self.live = None
        self.frames.clear()
        self.memory_bytes = 0
        self.server.live.release(self)
