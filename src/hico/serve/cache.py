"""The server's video memories: the engine's `VideoStore` (an LRU in RAM bounded in bytes over the disk cache,
one kept decode worker process), with an optional cap in videos, fed the request's media.

Every request that sends the same bytes with the same sampling gets the same VideoMemory, whoever sent it and
however (upload, data URL, local path): the key is the store's (content hash, sampling, image size, model), the
one `hico chat --cache` uses, so a multi-turn conversation or a second user encodes nothing. Only the model
worker calls `fetch`, so there is no locking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from hico.api import Hico
from hico.serve.files import Media
from hico.store import Stored, VideoStore
from hico.video.sampling import SamplingOptions


class ServeStore(VideoStore):
    """The engine's VideoStore, fed a request's media (`max_videos`, when given, caps the memories held in RAM
    besides the byte budget)."""

    def __init__(self, model: Hico, *, cache_dir: Path | None, memory_bytes: int, max_videos: int | None,
                 decode_timeout: float, on_get: Callable[[Stored], None] | None = None) -> None:
        super().__init__(model, cache_dir=cache_dir, memory_bytes=memory_bytes, max_videos=max_videos,
                         decode_timeout=decode_timeout, on_get=on_get)

    def fetch(self, media: Sequence[Media], sampling: SamplingOptions) -> Stored:
        """The memory of a video (one Media) or of images (one clip each), encoding it on a miss; the memory's
        source is the name the client knows, never a server path."""
        if media[0].kind == "video":
            return self.get(media[0].path, sampling, digest=media[0].digest, name=media[0].name)
        return self.get_images([m.path for m in media], digests=[m.digest for m in media],
                               names=[m.name for m in media])
