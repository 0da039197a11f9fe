"""VideoStore: videos in, encoded `VideoMemory`s out, each video decoded and encoded once.

    store = hico.VideoStore(model, cache_dir="cache/", memory_bytes=4 << 30)
    memory = store.get("talk.mp4").memory          # decoded and encoded; kept in RAM and on disk
    memory = store.get("talk.mp4").memory          # the same object, nothing read again

- Keys: the video's content (BLAKE2b of its bytes), the sampling, the tower's input size and the model's
  fingerprint and dtype (`Hico.tokens_id`), so a memory is reused for the same bytes under any name.
- In memory: an LRU bounded in bytes, counting each memory's tokens and the video prefixes it keeps.
- On disk (`cache_dir`): safetensors with a checksum, written under a temporary name and renamed into place;
  a damaged or foreign entry is warned about and replaced.
- Decoding: one kept decode worker process for the videos asked for one at a time (a video that crashes or
  hangs the decoder gets it replaced), and `prefetch(videos)` for runs that know their videos in advance:
  background threads, each with a kept worker at the lowest CPU priority, decode the next videos into a
  bounded queue of preprocessed clips while the model works; a video whose tokens are cached is not decoded.
- `on_get(stored)`: a metrics hook, called after every `get` with where the memory came from and how long it
  took ("memory", "disk" or "encoded").
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hico.errors import HicoError
from hico.memory import VideoMemory, file_digest, load_cached, memory_key
from hico.video.sampling import SamplingOptions

if TYPE_CHECKING:
    from hico.api import Hico

MEMORY_BYTES = 4 << 30  # encoded videos and their prefixes kept in RAM, at most
PREFETCH_BYTES = 1 << 30  # preprocessed clips held ahead of the model, at most
PREFETCH_NICE = 19  # decode workers ahead of the model take only the CPU it leaves idle (bench/eval.py)
DIGESTS_KEPT = 4096  # file digests remembered by path, size and modification time
ENCODE_BATCH_CLIPS = 8  # clips per tower call: bounds activation memory whatever the video length


@dataclass(frozen=True)
class Stored:
    memory: VideoMemory
    level: str  # where it came from: "memory", "disk", "encoded" (or "given" for a memory passed in)
    seconds: float  # time to get it (decode and encode, or load)


@dataclass(frozen=True)
class Wanted:
    """A video `prefetch` decodes ahead: the path, its sampling and the reader's options."""

    path: str
    sampling: SamplingOptions = SamplingOptions()
    options: tuple[tuple[str, object], ...] = ()  # Video(...) keyword arguments, as sorted pairs


def memory_nbytes(memory: VideoMemory) -> int:
    """What a memory holds in RAM: its tokens and the prefixes it keeps."""
    return memory.tokens.numel() * memory.tokens.element_size() + sum(p.nbytes for p in memory.prefixes.values())


class VideoStore:
    def __init__(self, engine: Hico, *, cache_dir: str | Path | None = None, memory_bytes: int = MEMORY_BYTES,
                 max_videos: int | None = None, decode_timeout: float = 30.0, isolate: bool = True,
                 on_get: Callable[[Stored], None] | None = None) -> None:
        if memory_bytes < 0:
            raise HicoError(f"the store's memory budget cannot be negative, got {memory_bytes}")
        if max_videos is not None and max_videos < 1:
            raise HicoError(f"the store holds at least one video in memory, got max_videos={max_videos}")
        self.engine = engine
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.memory_bytes = memory_bytes
        self.isolate = isolate
        self.decode_timeout = decode_timeout
        self.on_get = on_get
        self.max_videos = max_videos
        self.memories: OrderedDict[str, VideoMemory] = OrderedDict()
        self._sizes: dict[str, int] = {}  # bytes of each held memory (tokens and kept prefixes)
        self._nbytes = 0
        self._digests: OrderedDict[tuple, str] = OrderedDict()  # (path, size, mtime) -> content digest
        self._decoder = None  # the kept WorkerClient of `get`, started on first use
        self._prefetcher: _Prefetcher | None = None
        engine.stores.add(self)

    # ------------------------------------------------------------ keys and the two caches

    @property
    def image_size(self) -> int:
        return self.engine.model.config.vision.image_size

    def key(self, digest: str, sampling: object) -> str:
        """The cache key of a video's content digest under a sampling (or "images" for a set of pictures)."""
        return memory_key(digest, sampling, self.image_size, self.engine.tokens_id)

    def cached(self, key: str) -> tuple[VideoMemory | None, str]:
        """The memory of `key` from RAM or disk, and which ("memory", "disk"), or (None, "")."""
        if key in self.memories:
            self.memories.move_to_end(key)
            return self.memories[key], "memory"
        if self.cache_dir is not None:  # a damaged or foreign entry is warned about and encoded again
            memory = load_cached(self.cache_dir / f"{key}.safetensors", key)
            if memory is not None:
                self.keep(key, memory)
                return memory, "disk"
        return None, ""

    def digest(self, video: str | Path) -> str:
        """The content digest of a video file, hashed once per (path, size, modification time): asking about a
        video again does not read its bytes again. Frame folders are hashed each time."""
        path = Path(video)
        try:
            stat = path.stat()
        except OSError:
            return content_digest(path)  # the reader's error for it
        if path.is_dir():
            return content_digest(path)
        mark = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if mark not in self._digests:
            self._digests[mark] = content_digest(path)
            while len(self._digests) > DIGESTS_KEPT:
                self._digests.popitem(last=False)
        return self._digests[mark]

    def has(self, key: str) -> bool:
        """Whether `key` is held in RAM or on disk (not checked for damage: `cached` does that)."""
        return key in self.memories or (self.cache_dir is not None
                                        and (self.cache_dir / f"{key}.safetensors").exists())

    def keep(self, key: str, memory: VideoMemory) -> None:
        """Hold a memory in RAM, letting the least recently used go past the byte budget (and `max_videos`);
        the newest stays, whatever its size: it is in use."""
        self.memories[key] = memory
        self.memories.move_to_end(key)
        self._count(key, memory)
        self.trim()

    def resized(self, memory: VideoMemory) -> None:
        """A held memory's kept prefixes changed (the engine calls this): count its bytes again and trim."""
        if memory.key and self.memories.get(memory.key) is memory:
            self._count(memory.key, memory)
            self.trim()

    def _count(self, key: str, memory: VideoMemory) -> None:
        size = memory_nbytes(memory)
        self._nbytes += size - self._sizes.get(key, 0)
        self._sizes[key] = size

    def trim(self) -> None:
        """Let the least recently used memories go until the held bytes (tokens and kept prefixes, which
        grow as questions are asked) fit the budget, and their number `max_videos`."""
        while len(self.memories) > 1 and (self._nbytes > self.memory_bytes or
                                          self.max_videos is not None and len(self.memories) > self.max_videos):
            key, _ = self.memories.popitem(last=False)
            self._nbytes -= self._sizes.pop(key)

    @property
    def nbytes(self) -> int:
        """The bytes held in RAM: every memory's tokens and kept prefixes."""
        return self._nbytes

    def save(self, key: str, memory: VideoMemory) -> None:
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            memory.save(self.cache_dir / f"{key}.safetensors")

    # ------------------------------------------------------------ getting memories

    def get(self, video: str | Path, sampling: SamplingOptions = SamplingOptions(), *, digest: str | None = None,
            name: str | None = None, progress: bool = False, **video_options) -> Stored:
        """The memory of a video file or frame folder, encoding it on a miss. `digest` (its content hash,
        when the caller has it) saves hashing the file again; `name` is what the memory's `source` says
        (the path by default)."""
        started = time.perf_counter()
        key = self.key(digest or self.digest(video), sampling)
        memory, level = self.cached(key)
        if memory is None:
            memory, level = self._encode(Path(video), sampling, key, progress, video_options), "encoded"
            if name is not None:
                memory = replace(memory, source=name)
            self.save(key, memory)
            self.keep(key, memory)
        return self._got(Stored(memory, level, time.perf_counter() - started))

    def get_images(self, images: Sequence[str | Path | np.ndarray], digests: Sequence[str] | None = None,
                   names: Sequence[str] | None = None) -> Stored:
        """The memory of still images, each shown to the model as one whole clip (64 tokens), keyed by
        their contents."""
        from hico.video.preprocess import read_image

        started = time.perf_counter()
        if digests is None:
            digests = [file_digest(i) if not isinstance(i, np.ndarray) else _array_digest(i) for i in images]
        key = self.key("+".join(digests), "images")
        memory, level = self.cached(key)
        if memory is None:
            pixels = [read_image(i) if not isinstance(i, np.ndarray) else i for i in images]
            tokens = self.engine.encode_images(pixels).flatten(0, 1)  # (64 n, hidden)
            names = names or [str(i) if not isinstance(i, np.ndarray) else "image" for i in images]
            memory = VideoMemory(tokens=tokens, indices=list(range(len(pixels))), times=[0.0] * len(pixels),
                                 time_msg="", duration=0.0, source=", ".join(names), key=key)
            level = "encoded"
            self.save(key, memory)
            self.keep(key, memory)
        return self._got(Stored(memory, level, time.perf_counter() - started))

    def _got(self, stored: Stored) -> Stored:
        if self.on_get is not None:
            self.on_get(stored)
        return stored

    def _encode(self, path: Path, sampling: SamplingOptions, key: str, progress: bool,
                video_options: dict) -> VideoMemory:
        ahead = self._encode_ahead(Wanted(str(path), sampling, tuple(sorted(video_options.items()))), path, key)
        if ahead is not None:
            return ahead
        options = dict(video_options)
        if self.isolate and not path.is_dir() and "worker" not in options:
            options["worker"] = self.decoder
        memory = self.engine.encode_video(path, sampling, progress=progress, isolate=self.isolate, **options)
        return replace(memory, key=key)

    @property
    def decoder(self):
        """The kept decode worker process of `get` (started on first use)."""
        if self._decoder is None:
            from hico.video.worker import WorkerClient

            self._decoder = WorkerClient(timeout=self.decode_timeout)
        return self._decoder

    # ------------------------------------------------------------ decoding ahead

    def prefetch(self, videos: Sequence[Wanted], *, workers: int = 2, budget: int = PREFETCH_BYTES) -> None:
        """Start decoding `videos` in the background, in order, on `workers` threads (each with a kept decode
        worker process at the lowest CPU priority), at most `budget` bytes of clips held ahead. `get` then
        takes each one's clips when it is asked for it, in the same order (videos passed over are dropped);
        a video whose tokens the store holds by then is not decoded. Replaces any earlier prefetch."""
        self.stop_prefetch()
        if videos:
            config = self.engine.model.config
            self._prefetcher = _Prefetcher(list(videos), self, config.local_num_frames, budget, workers)

    def _encode_ahead(self, wanted: Wanted, path: Path, key: str) -> VideoMemory | None:
        """Encode a prefetched video's clips as they arrive; None if it was not prefetched (or the prefetched
        copy found its tokens cached, and they are gone or damaged since)."""
        entries = self._prefetcher.take(wanted) if self._prefetcher is not None else None
        if entries is None:
            return None
        chunks, batch = [], []
        for kind, value in entries:
            if kind == "error":
                raise value
            if kind == "cached":
                return None
            if kind == "clip":
                batch.append(value)
                if len(batch) == ENCODE_BATCH_CLIPS:
                    chunks.append(self.engine.encode_clip_batch(batch))
                    batch = []
            elif kind == "done":
                if batch:
                    chunks.append(self.engine.encode_clip_batch(batch))
                return VideoMemory(tokens=torch.cat(chunks), indices=value["indices"], times=value["times"],
                                   time_msg=value["time_msg"], duration=value["duration"], source=str(path),
                                   key=key)
        raise HicoError(f"{path}: the decoder stopped before the end of the video")

    def stop_prefetch(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def close(self) -> None:
        """Stop decoding ahead and the kept decode worker; the memories held stay usable."""
        self.stop_prefetch()
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def __enter__(self) -> VideoStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def content_digest(video: str | Path) -> str:
    """The digest of a video's bytes (`file_digest`), or the VideoError a reader would raise for it."""
    try:
        return file_digest(video)
    except OSError as exc:
        from hico.video.metadata import open_error

        raise open_error(video, exc) from None


def _array_digest(image: np.ndarray) -> str:
    digest = hashlib.blake2b(f"{image.dtype} {image.shape}".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


class _Prefetcher:
    """Threads that decode the wanted videos ahead of the model. Video k goes to thread k % workers, which
    puts (k, kind, value) entries on its own bounded queue (a share of `budget` in clips); the consumer takes
    video k from that queue, dropping the entries of videos it passed over. Each thread keeps one decode
    worker process for all its videos (a crash or hang costs only that video: its process is replaced)."""

    def __init__(self, wanted: list[Wanted], store: VideoStore, clip_frames: int, budget: int,
                 workers: int) -> None:
        size = store.image_size
        clip_bytes = clip_frames * 3 * size * size * 4
        workers = max(1, min(workers, len(wanted)))
        self.wanted, self.store, self.size, self.clip_frames = wanted, store, size, clip_frames
        self.queues = [queue.Queue(maxsize=max(1, budget // clip_bytes // workers)) for _ in range(workers)]
        self.current = 0  # the video the consumer reads; producers drop the videos before it (passed over)
        self.next = 0  # where the consumer's next `take` starts looking
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._produce, args=(w,), name=f"hico-prefetch-{w}", daemon=True)
                        for w in range(workers)]
        for thread in self.threads:
            thread.start()

    def take(self, wanted: Wanted) -> Iterator[tuple[str, object]] | None:
        """The entries of the next prefetched video equal to `wanted`, or None when none is ahead."""
        try:
            index = self.wanted.index(wanted, self.next)
        except ValueError:
            return None
        self.current, self.next = index, index + 1
        return self._entries(index)

    def _entries(self, index: int) -> Iterator[tuple[str, object]]:
        box = self.queues[index % len(self.queues)]
        while True:
            at, kind, value = box.get()
            if at < index:  # a video passed over
                continue
            yield kind, value
            if kind in ("done", "error", "cached"):
                return

    def _put(self, box: queue.Queue, entry: tuple) -> bool:
        """Queue an entry once there is room; False when stopped or the video was passed over."""
        while not self.stop.is_set() and entry[0] >= self.current:
            try:
                box.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, thread: int) -> None:
        from hico.video.worker import WorkerClient

        worker = WorkerClient(nice=PREFETCH_NICE) if self.store.isolate else None
        try:
            for index in range(thread, len(self.wanted), len(self.queues)):
                if self.stop.is_set():
                    return
                if index >= self.current:
                    self._decode(index, self.queues[thread], worker)
        finally:
            if worker is not None:
                worker.close()

    def _decode(self, index: int, box: queue.Queue, worker) -> None:
        from hico.video.reader import Video

        wanted = self.wanted[index]
        try:
            key = self.store.key(content_digest(wanted.path), wanted.sampling)
            if self.store.has(key):  # the store holds its tokens: nothing to decode
                self._put(box, (index, "cached", key))
                return
            isolate = self.store.isolate and not Path(wanted.path).is_dir()
            with Video(wanted.path, isolate=isolate, worker=worker if isolate else None,
                       **dict(wanted.options)) as video:
                plan = video.plan(wanted.sampling)
                for clip in video.clips(plan, self.size, self.clip_frames):
                    if not self._put(box, (index, "clip", clip.pixels)):
                        return
                info = {"indices": list(plan.indices), "times": video.times(plan), "time_msg": plan.time_msg,
                        "duration": plan.duration}
            self._put(box, (index, "done", info))
        except Exception as exc:  # handed to the consumer, which reports this video as unreadable
            if not isinstance(exc, HicoError):
                exc = HicoError(f"{wanted.path}: could not be read ({type(exc).__name__}: {exc})")
            self._put(box, (index, "error", exc))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
