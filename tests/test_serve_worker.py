"""The model worker's parts that need no model: the bounded queue (429 + Retry-After) and stop strings."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

pytest.importorskip("fastapi")

from hico.generate import GenerationOptions
from hico.memory import VideoMemory
from hico.serve.cache import Encoded
from hico.serve.errors import ApiError
from hico.serve.metrics import Metrics
from hico.serve.protocol import ChatRequest
from hico.serve.worker import Job, ModelWorker, StopFilter
from hico.video.sampling import SamplingOptions


def job(loop) -> Job:
    request = ChatRequest(model=None, question="?", history=(), media=(), options=GenerationOptions(),
                          sampling=None, dropout=None)
    return Job(request, (), SamplingOptions(), loop, time.monotonic() + 60)


def test_a_full_queue_answers_429_with_retry_after():
    metrics = Metrics()
    worker = ModelWorker(model=None, cache=None, metrics=metrics, max_queue=3)  # not started
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


def feed_all(stops, pieces) -> tuple[list[str], str, bool]:
    cut = StopFilter(tuple(stops))
    shown = []
    for piece in pieces:
        shown.append(cut.feed(piece))
        if cut.stopped:
            break
    shown.append(cut.flush())
    return shown, cut.text, cut.stopped


def test_stop_string_split_across_pieces_is_never_shown():
    shown, text, stopped = feed_all(["END"], ["a red ", "circle E", "N", "D and more"])
    assert "".join(shown) == text == "a red circle " and stopped
    assert shown[1] == "circle "  # "E" held back: it may begin the stop string


def test_held_back_text_is_released_when_it_is_not_a_stop():
    shown, text, stopped = feed_all(["END"], ["a red E", "dge"])
    assert shown[0] == "a red " and "".join(shown) == text == "a red Edge" and not stopped


def test_the_earliest_of_several_stops_wins():
    assert feed_all(["circle", "red"], ["a red circle"])[1] == "a "
    assert feed_all([], ["a", " b"])[0] == ["a", " b", ""]


class Cache:
    def get(self, media, sampling):
        memory = VideoMemory(tokens=torch.zeros(64, 8), indices=[0], times=[0.0], time_msg="", duration=0.0,
                             source="image", key="k")
        return Encoded(memory, "memory", 0.0)


class EndlessModel:
    """Answers with an endless stream of words (what a real model may do with a high max_tokens)."""

    def __init__(self, on_piece) -> None:
        self.on_piece = on_piece
        self.pieces = 0
        self.tokenizer = lambda text, add_special_tokens=False: {"input_ids": text.split()}

    def answer(self, memory, question, history, options, *, dropout=None, on_text=None):
        for _ in range(10_000):
            self.pieces += 1
            self.on_piece(self.pieces)
            on_text(" word")
        return "never reached"


def run_job(monkeypatch, on_piece) -> tuple[list, EndlessModel, Metrics]:
    import hico.serve.worker as worker_module

    monkeypatch.setattr(worker_module, "tokenize", lambda text, tokenizer: torch.zeros(10))
    metrics = Metrics()
    loop = asyncio.new_event_loop()
    try:
        the_job = job(loop)
        model = EndlessModel(lambda n: on_piece(the_job, n))
        worker = ModelWorker(model=model, cache=Cache(), metrics=metrics, max_queue=1)
        worker.process(the_job)
        loop.run_until_complete(asyncio.sleep(0))  # deliver the events the worker queued
        events = []
        while not the_job.events.empty():
            events.append(the_job.events.get_nowait())
    finally:
        loop.close()
    return events, model, metrics


def test_a_client_that_leaves_stops_its_generation_at_the_next_token(monkeypatch):
    def leave_after_three(the_job, n):
        if n == 3:
            the_job.cancel()  # what the server does when the connection drops

    events, model, metrics = run_job(monkeypatch, leave_after_three)
    assert model.pieces == 3  # the third piece's callback saw the cancellation and ended the loop
    assert [kind for kind, _ in events] == ["plan", "text", "text", "error"]
    assert events[-1][1].status == 499
    assert b'hico_requests_cancelled_total{reason="client"} 1.0' in metrics.render()


def test_a_request_past_its_deadline_ends_with_504(monkeypatch):
    events, model, metrics = run_job(monkeypatch, lambda the_job, n: setattr(the_job, "deadline", 0) if n == 5 else None)
    assert model.pieces == 5 and events[-1][1].status == 504
    assert events[-1][1].code == "request_timeout"
    assert b'hico_requests_cancelled_total{reason="timeout"} 1.0' in metrics.render()
