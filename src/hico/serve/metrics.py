"""Prometheus metrics of one server, in a registry of its own (two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from hico.store import Stored

SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("hico_requests", "HTTP requests answered, by route and status", ["route", "status"],
                                registry=registry)
        self.queue_depth = Gauge("hico_queue_depth", "chat requests waiting for or held by the model worker",
                                 registry=registry)
        self.time_to_first_token = Histogram("hico_time_to_first_token_seconds",
                                             "arrival of a chat request to its first answer text", buckets=SECONDS,
                                             registry=registry)
        self.encode_seconds = Histogram("hico_encode_seconds", "seconds to decode and encode one video or image set",
                                        buckets=SECONDS, registry=registry)
        self.encodes = Counter("hico_video_encodes", "videos or image sets encoded (cache misses)", registry=registry)
        self.cache_hits = Counter("hico_video_cache_hits", "encoded videos reused, by cache level", ["level"],
                                  registry=registry)
        self.visual_tokens = Counter("hico_visual_tokens", "visual tokens in the prompts of answered requests",
                                     registry=registry)
        self.cancelled = Counter("hico_requests_cancelled", "generations stopped early: the client left or the "
                                 "request ran out of time", ["reason"], registry=registry)
        self.completion_tokens = Counter("hico_completion_tokens", "answer tokens generated", registry=registry)
        self.live_sessions = Gauge("hico_live_sessions", "live video sessions holding a slot (open, or closed and "
                                   "not yet freed)", registry=registry)
        self.live_opened = Counter("hico_live_sessions_opened", "live video sessions started", registry=registry)
        self.live_frames = Counter("hico_live_frames", "frames sent to live sessions, by outcome: taken (into the "
                                   "stream), skipped (between two steps of the session's fps), dropped (its queue was "
                                   "full), invalid (refused)", ["outcome"], registry=registry)
        self.live_questions = Counter("hico_live_questions", "questions answered in live sessions", registry=registry)
        self.live_memory_bytes = Gauge("hico_live_memory_bytes", "KV cache and visual tokens held by live sessions",
                                       registry=registry)

    def count_stored(self, stored: Stored) -> None:
        """The video store's hook (`VideoStore.on_get`): a hit by level, or an encode; the seconds of every
        video read from disk or encoded."""
        if stored.level == "encoded":
            self.encodes.inc()
        else:
            self.cache_hits.labels(stored.level).inc()
        if stored.level != "memory":
            self.encode_seconds.observe(stored.seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
