"""The model worker: one thread that owns the model and answers jobs from a bounded queue, in order.

A job reports to the request that made it through an asyncio queue: ("plan", info) once the video is encoded,
("text", piece) as the answer grows, then ("done", result) or ("error", ApiError). A client that goes away or
a request past its deadline stops its generation at the next token.

Live video sessions (hico.serve.live) hand the same thread their model work as tasks (`call`): a clip's encode
and prefill, a question's answer. They share the queue with chat jobs, in arrival order, so the model never runs
two things at once; they do not count against --max-queue (each session has at most a few queued at a time).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hico.api import Hico
from hico.clips import TOKENS_PER_FRAME
from hico.errors import HicoError, VideoError
from hico.generate import Answer
from hico.memory import VideoMemory
from hico.serve.cache import ServeStore
from hico.serve.errors import ApiError
from hico.serve.files import Media, public_message
from hico.serve.metrics import Metrics
from hico.serve.protocol import ChatRequest
from hico.store import Stored
from hico.video.sampling import SamplingOptions

log = logging.getLogger("hico.serve")


def client_closed() -> ApiError:
    return ApiError(499, "the client closed the request", "client_closed")


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


class ModelWorker:
    def __init__(self, model: Hico, store: ServeStore, metrics: Metrics, max_queue: int) -> None:
        self.model = model
        self.store = store
        self.metrics = metrics
        self.max_queue = max_queue
        self.jobs: queue.Queue[Job | Callable[[], None] | None] = queue.Queue()  # chat jobs, live tasks, in order
        self.waiting = 0  # chat jobs in `jobs`: at most max_queue
        self._count = threading.Lock()
        self.busy = False
        self.job_seconds = 1.0  # moving average, for Retry-After
        self.thread = threading.Thread(target=self.run, name="hico-model-worker", daemon=True)
        metrics.queue_depth.set_function(self.depth)

    def depth(self) -> int:
        """Chat jobs waiting for or held by the worker."""
        return self.waiting + int(self.busy)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        while True:  # drop what waits, then wake the thread with the sentinel
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, Job):
                job.emit("error", ApiError(503, "the server is shutting down", "shutting_down", "server_error"))
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        """Queue a job, or a 429 with Retry-After when the queue is full."""
        with self._count:
            full = self.waiting >= self.max_queue
            if not full:
                self.waiting += 1
                self.jobs.put_nowait(job)
        if full:
            wait = max(1, round(self.job_seconds * (self.depth() + 1)))
            raise ApiError(429, f"the server is busy ({self.max_queue} requests waiting); retry in about "
                                f"{wait} s", "rate_limit_exceeded", "rate_limit_error",
                           headers={"Retry-After": str(wait)})

    def call(self, task: Callable[[], None]) -> None:
        """Run `task` on the worker thread after everything queued before it (a live session's model work; it
        reports its own results and errors). Never refused: a live session queues at most a few at a time."""
        self.jobs.put_nowait(task)

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if not isinstance(job, Job):
                try:
                    job()
                except Exception:  # a task reports its own errors; one that escapes is a bug, logged
                    log.exception("a live session task failed")
                continue
            self.busy = True
            with self._count:
                self.waiting -= 1
            start = time.monotonic()
            try:
                self.process(job)
            finally:
                self.busy = False
                self.job_seconds = 0.8 * self.job_seconds + 0.2 * (time.monotonic() - start)

    def process(self, job: Job) -> None:
        try:
            stopped = self.stopped(job)
            if stopped is not None:
                raise stopped
            stored = self.store.fetch(job.media, job.sampling)
            job.emit("plan", self.plan_info(stored))
            job.emit("done", self.generate(job, stored.memory))
        except ApiError as exc:
            if exc.code in ("client_closed", "request_timeout"):
                self.metrics.cancelled.labels("client" if exc.code == "client_closed" else "timeout").inc()
            job.emit("error", exc)
        except HicoError as exc:  # a video that cannot be read, options this video cannot meet, ...
            media = job.media[0]
            code = "invalid_media" if isinstance(exc, VideoError) else "invalid_request"
            job.emit("error", ApiError(400, public_message(exc, media.path, media.name), code))
        except Exception:  # a bug: logged here with its traceback, never sent to the client
            log.exception("request %s failed", job.request.id)
            job.emit("error", ApiError(500, "internal server error (the server log has the details)",
                                       "internal_error", "server_error"))

    @staticmethod
    def stopped(job: Job) -> ApiError | None:
        """Why the job must stop now: its client left (499) or its deadline passed (504); None if neither."""
        if job.cancelled.is_set():
            return client_closed()
        if time.monotonic() > job.deadline:
            return timeout_error(job.deadline - job.arrived)
        return None

    def plan_info(self, stored: Stored) -> dict:
        memory = stored.memory
        return {"frames": memory.num_frames, "indices": list(memory.indices), "times": list(memory.times),
                "duration": memory.duration, "time_msg": memory.time_msg.strip(),
                "visual_tokens": int(memory.tokens.shape[0]),
                "tokens_per_frame": TOKENS_PER_FRAME if memory.time_msg else None,
                "cache": stored.level, "encode_seconds": round(stored.seconds, 4)}

    def generate(self, job: Job, memory: VideoMemory) -> dict:
        """Answer the job's question, streaming its text as ("text", piece) events; the engine ends the answer
        at a stop string and stops at the next token once the client leaves or the deadline passes."""
        request = job.request
        first = True

        def on_token(piece: str) -> None:
            nonlocal first
            if first:  # the answer's leading whitespace is not shown; its first visible text starts the clock
                if not piece.strip():
                    return
                first = False
                self.metrics.time_to_first_token.observe(time.monotonic() - job.arrived)
                piece = piece.lstrip()
            job.emit("text", piece)

        answer: Answer = self.model.generate(memory, request.question, request.history, config=request.options,
                                             dropout=request.dropout, on_token=on_token,
                                             cancel=lambda: self.stopped(job) is not None)
        if answer.finish_reason == "cancelled":  # what `cancel` saw stays so: the client left or time ran out
            raise self.stopped(job)
        self.metrics.visual_tokens.inc(answer.visual_tokens)
        self.metrics.completion_tokens.inc(answer.completion_tokens)
        return {"text": answer.text, "finish": answer.finish_reason,
                "counts": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                           "visual_tokens": answer.visual_tokens}}
