"""The model worker: the bounded queue (429 + Retry-After), cancellation by the client or the deadline through
the engine's `cancel`, and, on the embedded model, stop strings split across tokens and the usage counts."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

pytest.importorskip("fastapi")

import hico
from hico.embedded import embedded_path
from hico.generate import Answer, GenerationConfig, Timings
from hico.memory import VideoMemory, file_digest
from hico.prompt import chat_prompt, tokenize
from hico.serve.cache import ServeStore
from hico.serve.errors import ApiError
from hico.serve.files import Media
from hico.serve.metrics import Metrics
from hico.serve.protocol import ChatRequest
from hico.serve.worker import Job, ModelWorker
from hico.store import MEMORY_BYTES, Stored
from hico.video.sampling import SamplingOptions
from serve_support import demo_video

QUESTION = "Describe the picture in the video."


def job(loop, options: GenerationConfig = GenerationConfig(), media: tuple = ()) -> Job:
    request = ChatRequest(model=None, question=QUESTION, history=(), media=media, options=options, sampling=None,
                          dropout=None)
    return Job(request, media, SamplingOptions(), loop, time.monotonic() + 60)


def run(worker: ModelWorker, make_job, on_emit=None) -> list:
    """The events of one job processed by `worker` (`on_emit(job, kind, count of that kind)` sees each)."""
    loop = asyncio.new_event_loop()
    try:
        the_job = make_job(loop)
        if on_emit is not None:
            emit, seen = the_job.emit, {}

            def watched(kind, value):
                seen[kind] = seen.get(kind, 0) + 1
                emit(kind, value)
                on_emit(the_job, kind, seen[kind])

            the_job.emit = watched
        worker.process(the_job)
        loop.run_until_complete(asyncio.sleep(0))  # deliver the events the worker queued
        events = []
        while not the_job.events.empty():
            events.append(the_job.events.get_nowait())
    finally:
        loop.close()
    return events


def test_a_full_queue_answers_429_with_retry_after():
    metrics = Metrics()
    worker = ModelWorker(model=None, store=None, metrics=metrics, max_queue=3)  # not started
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3):
            worker.submit(job(loop))
        assert worker.depth() == 3
        with pytest.raises(ApiError) as caught:
            worker.submit(job(loop))
        error = caught.value
        assert error.status == 429 and error.body()["error"]["type"] == "rate_limit_error"
        assert int(error.headers["Retry-After"]) >= 1
        assert b"hico_queue_depth 3.0" in metrics.render()
    finally:
        loop.close()


class Store:
    def fetch(self, media, sampling) -> Stored:
        memory = VideoMemory(tokens=torch.zeros(64, 8), indices=[0], times=[0.0], time_msg="", duration=0.0,
                             source="image", key="k")
        return Stored(memory, "memory", 0.0)


class EndlessModel:
    """Answers with an endless stream of words (what a real model may do with a high max_tokens), polling
    `cancel` before every token as the engine does."""

    def __init__(self) -> None:
        self.pieces = 0

    def generate(self, memory, question, history=(), *, config, dropout=None, on_token=None, cancel=None) -> Answer:
        while self.pieces < 10_000:
            if cancel():
                return Answer("word " * self.pieces, (1,) * self.pieces, 10, self.pieces, "cancelled", 64,
                              Timings(0.0, 0.0, 0.0))
            self.pieces += 1
            on_token(" word")
        raise AssertionError("cancel never said stop")


def test_a_client_that_leaves_stops_its_generation_at_the_next_token():
    metrics, model = Metrics(), EndlessModel()
    worker = ModelWorker(model=model, store=Store(), metrics=metrics, max_queue=1)
    events = run(worker, job, lambda the_job, kind, n: the_job.cancel() if kind == "text" and n == 3 else None)
    assert model.pieces == 3  # the engine polled `cancel` before the fourth token and stopped
    assert [kind for kind, _ in events] == ["plan", "text", "text", "text", "error"]
    assert [value for kind, value in events if kind == "text"] == ["word", " word", " word"]  # no leading space
    assert events[-1][1].status == 499 and events[-1][1].code == "client_closed"
    assert b'hico_requests_cancelled_total{reason="client"} 1.0' in metrics.render()
    assert b"hico_time_to_first_token_seconds_count 1.0" in metrics.render()


def test_a_request_past_its_deadline_ends_with_504():
    metrics, model = Metrics(), EndlessModel()
    worker = ModelWorker(model=model, store=Store(), metrics=metrics, max_queue=1)
    events = run(worker, job, lambda the_job, kind, n: setattr(the_job, "deadline", 0) if kind == "text" and n == 5
                 else None)
    assert model.pieces == 5 and events[-1][1].status == 504
    assert events[-1][1].code == "request_timeout"
    assert b'hico_requests_cancelled_total{reason="timeout"} 1.0' in metrics.render()
    assert b'hico_requests_cancelled_total{reason="client"}' not in metrics.render()


def test_a_job_cancelled_or_late_before_it_starts_encodes_nothing():
    class NoStore:
        def fetch(self, media, sampling):
            raise AssertionError("nothing should be encoded for a job that is over")

    worker = ModelWorker(model=EndlessModel(), store=NoStore(), metrics=Metrics(), max_queue=1)

    def gone(loop):
        the_job = job(loop)
        the_job.cancel()
        return the_job

    def late(loop):
        the_job = job(loop)
        the_job.deadline = time.monotonic() - 1
        return the_job

    assert [(kind, value.status) for kind, value in run(worker, gone)] == [("error", 499)]
    assert [(kind, value.status) for kind, value in run(worker, late)] == [("error", 504)]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(model, store, the demo video's Media, its colour and shape) on the embedded model."""
    demo = demo_video(tmp_path_factory.mktemp("serve-worker") / "demo.mp4", seed=0, seconds=32)
    model = hico.load(embedded_path())
    store = ServeStore(model, cache_dir=None, memory_bytes=MEMORY_BYTES, max_videos=None, decode_timeout=30)
    yield model, store, Media(demo.path, "video", file_digest(demo.path), "demo.mp4"), demo
    store.close()


def split_stop(model, token_ids) -> tuple[str, int]:
    """A stop string of two characters on either side of the first boundary between two tokens' text, and how
    many tokens the answer has once it is complete (the one that completes the stop string included)."""
    for k in range(1, len(token_ids)):
        before = model.tokenizer.decode(list(token_ids[:k]), skip_special_tokens=True)
        after = model.tokenizer.decode(list(token_ids[:k + 1]), skip_special_tokens=True)
        stop = before[-2:] + after[len(before):len(before) + 2]
        if len(before) >= 2 and len(after) >= len(before) + 2 and stop.strip() == stop and stop not in before:
            return stop, k + 1
    raise AssertionError(f"no token boundary to split a stop string across in {token_ids}")


def test_stop_strings_split_across_tokens_are_never_shown(embedded):
    model, store, media, demo = embedded
    worker = ModelWorker(model=model, store=store, metrics=Metrics(), max_queue=1)
    events = run(worker, lambda loop: job(loop, GenerationConfig(max_new_tokens=32), (media,)))
    full = events[-1][1]
    assert events[-1][0] == "done" and demo.colour in full["text"] and demo.shape in full["text"], events
    memory = store.fetch([media], SamplingOptions()).memory
    answer = model.generate(memory, QUESTION, config=GenerationConfig(max_new_tokens=32))  # the same, directly
    assert answer.text == full["text"]

    stop, tokens = split_stop(model, answer.token_ids)
    metrics = Metrics()
    worker = ModelWorker(model=model, store=store, metrics=metrics, max_queue=1)
    events = run(worker, lambda loop: job(loop, GenerationConfig(max_new_tokens=32, stop=(stop,)), (media,)))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "plan" and kinds[-1] == "done" and set(kinds[1:-1]) == {"text"}
    shown = "".join(value for kind, value in events if kind == "text")
    done = events[-1][1]
    cut = answer.text[:answer.text.index(stop)]
    assert shown == done["text"] == cut.strip()  # the stop string's first half was held back, never shown
    assert done["finish"] == "stop"
    # the counts are the engine's: the prompt (the one placeholder stands for every visual token) and the tokens
    # generated up to the one that completed the stop string
    visual = memory.num_frames * 16
    prompt = tokenize(chat_prompt(QUESTION, memory.time_msg), model.tokenizer)
    assert done["counts"] == {"prompt_tokens": prompt.numel() - 1 + visual, "completion_tokens": tokens,
                              "visual_tokens": visual}
    assert metrics.registry.get_sample_value("hico_completion_tokens_total") == tokens
    assert metrics.registry.get_sample_value("hico_visual_tokens_total") == visual


def test_a_short_limit_ends_with_length(embedded):
    model, store, media, _ = embedded
    worker = ModelWorker(model=model, store=store, metrics=Metrics(), max_queue=1)
    done = run(worker, lambda loop: job(loop, GenerationConfig(max_new_tokens=1), (media,)))[-1][1]
    assert done["finish"] == "length" and done["counts"]["completion_tokens"] == 1 and done["text"]
