"""Live video: questions about a stream while it plays, each answered by prefilling only its own tokens.

HiCo encodes a video as independent 4-frame clips, and the official prompt puts the visual tokens before the
time message and the question (`<image>\\n{time message} {question}`). So a `LiveVideo` encodes each clip as
soon as its 4 frames have arrived and runs its 64 tokens through the LLM at once, after what is already
cached: the keys and values of the prompt up to the last visual token are always ready. A question then
prefills only its own tokens (the time message is made at question time) from a snapshot of that cache, and
frames keep arriving while it is answered.

Memory: without a budget the cache grows by 64 tokens per clip. With `budget_tokens`, once the visual tokens
exceed it, the lowest-scored older ones are evicted from every layer (never those of the `keep_recent_clips`
newest clips). The score is question-agnostic: `value_norm` (the mean norm of a token's values over layers
and heads: InfiniPot-V keeps high value-norm tokens) or `random` (the baseline). The kept tokens are then given
contiguous positions again, as the official in-LLM dropout gives the tokens it keeps: their cached keys are
rotated back by the positions they move (RoPE is a rotation, so this is exact up to rounding). Positions so
stay below the prompt's text plus the budget however long the stream runs; without a budget a stream that
would pass the model's position range (`max_position_embeddings`) is refused with what to do.

In-LLM dropout: off by default. A schedule turned on makes each question prefill the prefix over every kept
visual token again (its uniform drops depend on how many there are, its text-guided ones on the question):
correct, and slower as the stream grows; the clips are still encoded as they arrive.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hico.dropout import DropSchedule
from hico.errors import HicoError, OptionError
from hico.generate import Answer, GenerationConfig
from hico.memory import VideoMemory, prefix_key
from hico.model import ReservedLayer, VideoPrefix, VisualSpan, prompt_cache
from hico.prompt import IMAGE, chat_prompt, tokenize
from hico.video.preprocess import normalize, resize_frame
from hico.video.sampling import time_message

SCORES = ("value_norm", "random")


@dataclass(frozen=True)
class LiveOptions:
    fps: float = 1.0  # frames kept per second of stream time
    budget_tokens: int | None = None  # visual tokens kept in the KV cache at most (None: all)
    keep_recent_clips: int = 4  # never evicted: the newest clips
    score: str = "value_norm"  # which older tokens stay: "value_norm" or "random" (the baseline)
    seed: int = 0  # of the random baseline

    def __post_init__(self) -> None:
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise OptionError(f"fps must be a positive number of frames per second, got {self.fps}")
        if self.score not in SCORES:
            raise OptionError(f"unknown eviction score {self.score!r}; use one of {', '.join(SCORES)}")
        if self.keep_recent_clips < 1:
            raise OptionError(f"keep_recent_clips must be at least 1, got {self.keep_recent_clips}")
        if self.budget_tokens is not None and self.budget_tokens < 64 * self.keep_recent_clips:
            raise OptionError(f"budget_tokens {self.budget_tokens} is below the {self.keep_recent_clips} newest clips "
                              f"that are always kept ({64 * self.keep_recent_clips} tokens); raise it or lower "
                              "keep_recent_clips")


class LiveVideo:
    """A stream being watched: `push` frames (RGB uint8 with their time in seconds) or `push_video`, and ask with
    `answer` / `generate` at any moment. Safe to push from one thread while another asks."""

    def __init__(self, engine, options: LiveOptions = LiveOptions(), dropout: DropSchedule | str | None = "off"):
        engine._need_tokenizer()
        self.engine = engine
        self.model = engine.model
        self.options = options
        self.schedule = engine.schedule(dropout)
        if self.schedule.enabled and options.budget_tokens is not None and options.score == "value_norm":
            # value norms are read from the prefilled cache, which a dropout schedule leaves to question time
            warnings.warn("in-LLM dropout keeps no prefilled cache to score tokens by value norm: the budget evicts at "
                          "random (recall as the random baseline's in docs/benchmarks.md); use dropout='off' for "
                          "value-norm eviction", stacklevel=2)
        self.size = self.model.config.vision.image_size
        self.clip = self.model.config.local_num_frames
        self.tokens_per_clip = self.model.config.tokens_per_clip
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(options.seed)
        self._id = uuid.uuid4().hex[:12]
        text, _ = chat_prompt("?", None).split(IMAGE)
        self._prefix_ids = tokenize(text + IMAGE, engine.tokenizer)
        self._text_tokens = int(self._prefix_ids.numel()) - 1
        self._limit = int(self.model.llm.config.max_position_embeddings)
        self._pending: list[np.ndarray] = []  # resized frames of the clip being filled
        self._tokens: list[torch.Tensor] = []  # (64, hidden) per clip still held (rows evicted lazily below)
        self._kept_rows: torch.Tensor | None = None  # indices into cat(_tokens) of the kept visual tokens
        self._clip_of: list[int] = []  # for each kept visual token: the clip it came from
        self.num_frames = 0  # frames taken (after sampling to fps)
        self._first_time: float | None = None
        self._next_time: float | None = None
        self._clips = 0
        self._version = 0
        self._cache = None
        with torch.inference_mode():
            self._start_cache()

    # --- the stream -------------------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """Stream time covered by the frames taken so far (each stands for 1/fps seconds)."""
        return self.num_frames / self.options.fps

    @property
    def kept_tokens(self) -> int:
        """Visual tokens in the KV cache now."""
        with self._lock:
            return len(self._clip_of)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the KV cache and of the visual tokens held."""
        with self._lock:
            cache = sum(layer.keys.nbytes + layer.values.nbytes for layer in self._cache.layers)
            return cache + sum(t.nbytes for t in self._tokens)

    def push(self, frame: np.ndarray, t: float) -> bool:
        """Offer one RGB uint8 frame shown at `t` seconds; returns whether it was taken (frames come at the
        target rate: the first, then the first at or after each 1/fps step). A full clip is encoded at once."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise HicoError(f"a live frame is RGB uint8 of shape (H, W, 3), got {frame.dtype} {frame.shape}")
        with self._lock:
            if self._next_time is not None and t < self._next_time - 1e-9:
                return False
            if self._first_time is None:
                self._first_time = t
            self.num_frames += 1
            self._next_time = self._first_time + self.num_frames / self.options.fps
            self._pending.append(resize_frame(frame, self.size))
            if len(self._pending) == self.clip:
                self._add_clip(np.stack(self._pending))
                self._pending = []
            return True

    def push_video(self, source: str | Path, *, realtime: bool = False, stop: threading.Event | None = None,
                   on_frame: Callable[[float], None] | None = None, **open_options) -> int:
        """Push a video file, capture device or network stream (anything `av.open` reads; `format=`, `options=`
        go to it) at the target rate; `realtime` paces it as it plays. Returns the frames taken."""
        from hico.live_sources import frames_of

        taken = 0
        offset = self.seconds if self.num_frames else 0.0  # a second source continues the stream's time
        for frame, t in frames_of(str(source), fps=self.options.fps, realtime=realtime, stop=stop, **open_options):
            t += offset
            taken += self.push(frame, t)
            if on_frame is not None:
                on_frame(t)
        return taken

    # --- asking -----------------------------------------------------------------------------------------------
    def memory(self) -> VideoMemory:
        """A snapshot of what has been seen, as a VideoMemory whose prefilled prefix is the live cache (the
        frames of an unfinished clip are not in it yet)."""
        with self._lock:
            if not self._clip_of:
                raise HicoError("no clip has been seen yet: a question needs at least 4 frames of the stream")
            tokens = self._visual()
            frames = self._clips * self.clip
            seconds = frames / self.options.fps
            memory = VideoMemory(tokens=tokens, indices=list(range(frames)),
                                 times=[i / self.options.fps for i in range(frames)],
                                 time_msg=time_message(seconds, frames), duration=seconds, source="live",
                                 key=f"live:{self._id}:{self._version}")
            if not self.schedule.enabled:
                key = prefix_key(memory.key, self.engine.model_id, self.engine.variant, self.schedule,
                                 self._prefix_ids.tolist())
                kv = [(layer.keys, layer.values) for layer in self._cache.layers]
                count = tokens.shape[0]
                memory.keep_prefix(key, VideoPrefix(kv, None, len(kv), torch.arange(count), count,
                                                    VisualSpan(self._text_tokens, count)), max_bytes=1 << 62)
            return memory

    def generate(self, question: str, history: Sequence[tuple[str, str]] = (), **kwargs) -> Answer:
        """`Hico.generate` about everything seen so far (`config`, `on_token`, `cancel` as there)."""
        return self.engine.generate(self.memory(), question, history, dropout=self.schedule, **kwargs)

    def answer(self, question: str, history: Sequence[tuple[str, str]] = (),
               config: GenerationConfig = GenerationConfig()) -> str:
        return self.generate(question, history, config=config).text

    # --- inside -----------------------------------------------------------------------------------------------
    def _start_cache(self) -> None:
        self._cache = prompt_cache(self.model.llm.config)
        ids = self._prefix_ids[:-1].to(self.model.device)
        hidden = self.model.llm.model.embed_tokens(ids)[None]
        self.model.run_layers(hidden, self._cache, range(len(self.model._layers())), None, keep_all=False)

    @torch.inference_mode()
    def _add_clip(self, frames: np.ndarray) -> None:
        tokens = self.model.encode_clips(normalize(frames)[None]).flatten(0, 1)  # (64, hidden)
        if self.options.budget_tokens is None and \
                self._text_tokens + len(self._clip_of) + tokens.shape[0] + 512 > self._limit:
            raise HicoError(f"the stream has reached the model's position range ({self._limit} positions, "
                            f"{self.seconds:.0f} s at {self.options.fps:g} fps); start it with a token budget "
                            "(budget_tokens) to keep watching")
        self._tokens.append(tokens.detach())
        self._clip_of += [self._clips] * tokens.shape[0]
        rows = torch.arange(sum(t.shape[0] for t in self._tokens) - tokens.shape[0],
                            sum(t.shape[0] for t in self._tokens))
        self._kept_rows = rows if self._kept_rows is None else torch.cat([self._kept_rows, rows])
        if not self.schedule.enabled:  # the schedule's own prefix is made at question time
            self._reserve(tokens.shape[0])
            self.model.run_layers(tokens[None].to(self.model.dtype), self._cache, range(len(self.model._layers())),
                                  None, keep_all=False)
        self._clips += 1
        self._version += 1
        budget = self.options.budget_tokens
        if budget is not None and len(self._clip_of) > budget:
            self._evict(len(self._clip_of) - budget)

    def _reserve(self, tokens: int) -> None:
        """Room for `tokens` more in every layer, doubling: a clip's keys and values are written in place, not
        appended by copying the whole cache (snapshots keep their views: nothing before them is rewritten)."""
        for layer in self._cache.layers:
            needed = layer.get_seq_length() + tokens
            if isinstance(layer, ReservedLayer) and needed > layer.capacity:
                layer.reserve(max(needed, 2 * layer.capacity, 1024))

    def _visual(self) -> torch.Tensor:
        return torch.cat(self._tokens)[self._kept_rows]

    def _evict(self, count: int) -> None:
        """Drop `count` visual tokens (never of the newest clips) from the cache and the held tokens, then give
        the kept ones contiguous positions (cached keys rotated back by the positions they move)."""
        newest = self._clips - self.options.keep_recent_clips
        clip_of = torch.tensor(self._clip_of)
        candidates = (clip_of < newest).nonzero().flatten()
        if len(candidates) < count:
            raise HicoError("internal: the budget cannot hold the newest clips")  # LiveOptions rules this out
        scores = self._scores()[candidates]
        drop = candidates[torch.argsort(scores, stable=True)[:count]]
        keep = torch.ones(len(clip_of), dtype=torch.bool)
        keep[drop] = False
        kept = keep.nonzero().flatten()
        self._kept_rows = self._kept_rows[kept]
        self._clip_of = clip_of[kept].tolist()
        self._compact_tokens()
        if not self.schedule.enabled:
            self._compact_cache(kept)

    def _scores(self) -> torch.Tensor:
        count = len(self._clip_of)
        if self.options.score == "random" or self.schedule.enabled:
            return torch.from_numpy(self._rng.random(count))
        start = self._text_tokens
        total = torch.zeros(count)
        for layer in self._cache.layers:  # values (1, kv_heads, tokens, head_dim): mean norm over heads
            total += layer.values[0, :, start:start + count].float().norm(dim=-1).mean(dim=0).cpu()
        return total

    def _compact_tokens(self) -> None:
        """Keep the held token rows the kept indices need (the evicted rows' memory is let go)."""
        tokens = torch.cat(self._tokens)
        self._tokens = [tokens[self._kept_rows].clone()]
        self._kept_rows = torch.arange(self._tokens[0].shape[0])

    def _compact_cache(self, kept: torch.Tensor) -> None:
        start = self._text_tokens
        rows = torch.cat([torch.arange(start), start + kept]).to(self.model.device)
        moved = (rows - torch.arange(len(rows), device=rows.device)).to(torch.float32)  # positions each key moves back
        rotary = self.model.llm.model.rotary_emb
        angles = moved[:, None] * rotary.inv_freq.to(moved.device)[None, :]  # (tokens, head_dim / 2)
        cos, sin = torch.cos(angles).repeat(1, 2), torch.sin(angles).repeat(1, 2)
        cache = prompt_cache(self.model.llm.config)
        for old, new in zip(self._cache.layers, cache.layers):
            keys = old.keys[:, :, rows].float()
            keys = keys * cos - _rotate_half(keys) * sin  # rotate by -moved: R(p - d) = R(-d) R(p)
            values = old.values[:, :, rows]
            new.lazy_initialization(keys, values)
            new.keys, new.values = keys.to(old.keys.dtype).contiguous(), values.contiguous()
        self._cache = cache


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)
