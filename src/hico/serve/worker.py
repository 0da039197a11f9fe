"""The model worker: one thread that owns the model and answers jobs from a bounded queue, in order.

A job reports to the request that made it through an asyncio queue: ("plan", info) once the video is encoded,
("text", piece) as the answer grows, then ("done", result) or ("error", ApiError). A client that goes away or
a request past its deadline stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from hico.api import Hico
from hico.errors import HicoError, VideoError
from hico.prompt import chat_prompt, tokenize
from hico.serve.cache import VideoCache
from hico.serve.errors import ApiError
from hico.serve.files import Media, public_message
from hico.serve.metrics import Metrics
from hico.serve.protocol import ChatRequest
from hico.video.reader import TOKENS_PER_FRAME
from hico.video.sampling import SamplingOptions

log = logging.getLogger("hico.serve")


class Cancelled(Exception):
    """The client went away: stop generating."""


class Stopped(Exception):
    """A stop string appeared: the answer is complete."""


def timeout_error(seconds: float) -> ApiError:
    return ApiError(504, f"the request took longer than its limit of {seconds:g} s (--request-timeout or "
                         "hico.timeout)", "request_timeout", "server_error")


@dataclass
class Job:
    request: ChatRequest
    media: tuple[Media, ...]
    sampling: SamplingOptions
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic() seconds
    arrived: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, value) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the server's loop has closed: nobody is listening any more
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()


class StopFilter:
    """Cuts the answer at the first stop string, holding back text that may be the start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that is safe to show now."""
        self.text += piece
        hits = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True
            return self.flush()
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        end = len(self.text) - hold
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


class ModelWorker:
    def __init__(self, model: Hico, cache: VideoCache, metrics: Metrics, max_queue: int) -> None:
        self.model = model
        self.cache = cache
        self.metrics = metrics
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.busy = False
        self.job_seconds = 1.0  # moving average, for Retry-After
        self.thread = threading.Thread(target=self.run, name="hico-model-worker", daemon=True)
        metrics.queue_depth.set_function(self.depth)

    def depth(self) -> int:
        return self.jobs.qsize() + int(self.busy)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        while True:  # drop what waits, then wake the thread with the sentinel
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit("error", ApiError(503, "the server is shutting down", "shutting_down", "server_error"))
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        """Queue a job, or a 429 with Retry-After when the queue is full."""
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            wait = max(1, round(self.job_seconds * (self.depth() + 1)))
            raise ApiError(429, f"the server is busy ({self.jobs.maxsize} requests waiting); retry in about "
                                f"{wait} s", "rate_limit_exceeded", "rate_limit_error",
                           headers={"Retry-After": str(wait)}) from None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.busy = True
            start = time.monotonic()
            try:
                self.process(job)
            finally:
                self.busy = False
                self.job_seconds = 0.8 * self.job_seconds + 0.2 * (time.monotonic() - start)

    def process(self, job: Job) -> None:
        try:
            if job.cancelled.is_set():
                raise Cancelled
            if time.monotonic() > job.deadline:
                raise timeout_error(job.deadline - job.arrived)
            encoded = self.cache.get(job.media, job.sampling)
            job.emit("plan", self.plan_info(encoded))
            job.emit("done", self.generate(job, encoded.memory))
        except Cancelled:
            self.metrics.cancelled.labels("client").inc()
            job.emit("error", ApiError(499, "the client closed the request", "client_closed"))
        except ApiError as exc:
            if exc.code == "request_timeout":
                self.metrics.cancelled.labels("timeout").inc()
            job.emit("error", exc)
        except HicoError as exc:  # a video that cannot be read, options this video cannot meet, ...
            media = job.media[0]
            code = "invalid_media" if isinstance(exc, VideoError) else "invalid_request"
            job.emit("error", ApiError(400, public_message(exc, media.path, media.name), code))
        except Exception:  # a bug: logged here with its traceback, never sent to the client
            log.exception("request %s failed", job.request.id)
            job.emit("error", ApiError(500, "internal server error (the server log has the details)",
                                       "internal_error", "server_error"))

    def plan_info(self, encoded) -> dict:
        memory = encoded.memory
        return {"frames": memory.num_frames, "indices": list(memory.indices), "times": list(memory.times),
                "duration": memory.duration, "time_msg": memory.time_msg.strip(),
                "visual_tokens": int(memory.tokens.shape[0]),
                "tokens_per_frame": TOKENS_PER_FRAME if memory.time_msg else None,
                "cache": encoded.level, "encode_seconds": round(encoded.seconds, 4)}

    def generate(self, job: Job, memory) -> dict:
        request = job.request
        tokenizer = self.model.tokenizer
        prompt = tokenize(chat_prompt(request.question, memory.time_msg, request.history), tokenizer)
        visual = int(memory.tokens.shape[0])
        prompt_tokens = int(prompt.numel()) - 1 + visual  # the one placeholder stands for every visual token
        stops = StopFilter(request.stop)
        first = True

        def on_text(piece: str) -> None:
            nonlocal first
            if job.cancelled.is_set():
                raise Cancelled
            if time.monotonic() > job.deadline:
                raise timeout_error(job.deadline - job.arrived)
            shown = stops.feed(piece)
            if first and shown.strip():
                first = False
                self.metrics.time_to_first_token.observe(time.monotonic() - job.arrived)
                shown = shown.lstrip()
            if shown and not first:
                job.emit("text", shown)
            if stops.stopped:
                raise Stopped

        try:
            text = self.model.answer(memory, request.question, request.history, request.options,
                                     dropout=request.dropout, on_text=on_text)
            finish = None
        except Stopped:
            text, finish = stops.text, "stop"
        tail = stops.flush()
        if tail.strip() or (tail and not first):
            job.emit("text", tail.lstrip() if first else tail)
        text = text.strip()
        # answer() returns text, not ids: the count re-tokenizes it (equal to the generated ids but for
        # rare merges across token boundaries)
        completion_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        if finish is None:
            finish = "length" if completion_tokens >= request.options.max_new_tokens else "stop"
        self.metrics.visual_tokens.inc(visual)
        self.metrics.completion_tokens.inc(completion_tokens)
        return {"text": text, "finish": finish,
                "counts": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "visual_tokens": visual}}
