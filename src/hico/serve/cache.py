"""Shared video memories: an in-memory LRU over the disk cache, keyed by content hash + sampling + model.

Every request that sends the same bytes with the same sampling gets the same VideoMemory, whoever sent it
and however (upload, data URL, local path), so a multi-turn conversation or a second user encodes nothing.
Only the model worker calls `get`, so there is no locking, and one decode worker process is kept for every
video it encodes (no process start per request; a video that crashes or hangs the decoder gets it replaced).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hico.api import Hico
from hico.memory import VideoMemory, load_cached, memory_key
from hico.serve.files import Media
from hico.serve.metrics import Metrics
from hico.video.preprocess import read_image
from hico.video.sampling import SamplingOptions
from hico.video.worker import WorkerClient


@dataclass(frozen=True)
class Encoded:
    memory: VideoMemory
    level: str  # where it came from: "memory", "disk" or "encoded"
    seconds: float  # encode (or load) time


class VideoCache:
    def __init__(self, model: Hico, metrics: Metrics, capacity: int, cache_dir: Path | None,
                 decode_timeout: float) -> None:
        self.model = model
        self.metrics = metrics
        self.capacity = capacity
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.decoder = WorkerClient(timeout=decode_timeout)
        self.memories: OrderedDict[str, VideoMemory] = OrderedDict()

    def close(self) -> None:
        self.decoder.close()

    def key(self, media: Sequence[Media], sampling: SamplingOptions) -> str:
        size = self.model.model.config.vision.image_size
        if media[0].kind == "video":
            return memory_key(media[0].digest, sampling, size, self.model.tokens_id)
        return memory_key("+".join(m.digest for m in media), "images", size, self.model.tokens_id)

    def get(self, media: Sequence[Media], sampling: SamplingOptions) -> Encoded:
        """The memory of a video (one Media) or of images (one clip each), encoding it on a miss."""
        key = self.key(media, sampling)
        start = time.perf_counter()
        if key in self.memories:
            self.memories.move_to_end(key)
            self.metrics.cache_hits.labels("memory").inc()
            return Encoded(self.memories[key], "memory", 0.0)
        cached = self.cache_dir / f"{key}.safetensors" if self.cache_dir is not None else None
        memory = load_cached(cached, key) if cached is not None else None  # damaged: warned, encoded again
        if memory is not None:
            level = "disk"
            self.metrics.cache_hits.labels("disk").inc()
        else:
            memory, level = self._encode(media, sampling, key), "encoded"
            self.metrics.encodes.inc()
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                memory.save(cached)
        seconds = time.perf_counter() - start
        self.metrics.encode_seconds.observe(seconds)
        self.memories[key] = memory
        while len(self.memories) > self.capacity:
            self.memories.popitem(last=False)
        return Encoded(memory, level, seconds)

    def _encode(self, media: Sequence[Media], sampling: SamplingOptions, key: str) -> VideoMemory:
        if media[0].kind == "video":
            memory = self.model.encode_video(media[0].path, sampling, worker=self.decoder)
            # the stored path is the server's business; the key is what `hico chat --cache` would use
            return replace(memory, source=media[0].name, key=key)
        tokens = self.model.encode_images([read_image(m.path) for m in media]).flatten(0, 1)  # (64 n, hidden)
        count = len(media)
        return VideoMemory(tokens=tokens, indices=list(range(count)), times=[0.0] * count, time_msg="",
                           duration=0.0, source=", ".join(m.name for m in media), key=key)
