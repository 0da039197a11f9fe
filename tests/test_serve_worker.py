"""The model worker's parts that need no model: the bounded queue (429 + Retry-After) and stop strings."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi")

from hico.generate import GenerationOptions
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
    worker = ModelWorker(model=None, cache=None, metrics=metrics, max_queue=3, request_timeout=60)  # not started
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
