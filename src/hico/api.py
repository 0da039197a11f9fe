"""The user-facing API: `hico.load(path)` -> Hico, then `encode_video`, `answer`, `chat`.

    model = hico.load("VideoChat-Flash-Qwen2_5-2B_res448", dtype=torch.bfloat16, device="cuda")
    memory = model.encode_video("talk.mp4")                 # decoded and encoded once
    print(model.answer(memory, "What is on the whiteboard?"))
    print(model.answer(memory, "And who wrote it?"))         # the video is not touched again
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from hico.checkpoint import (CheckpointError, HicoConfig, check_state_dict, is_hub_id, load_state_dict,
                             resolve_checkpoint, weight_files)
from hico.dropout import DropSchedule
from hico.engine import AnswerStream, Completion, Likelihood, Request
from hico.errors import HicoError, NonFiniteError
from hico.generate import Answer, GenerationConfig, TextStream, Timings, run_decoding, timed
from hico.memory import (PREFIX_BYTES, VideoMemory, file_digest, load_cached, load_prefix, memory_key, prefix_key,
                         save_prefix)
from hico.model import IMAGE_TOKEN_INDEX, HicoModel, Prefill, VideoPrefix, nonfinite_cause
from hico.store import ENCODE_BATCH_CLIPS, Stored, VideoStore
from hico.prompt import IMAGE, chat_prompt, tokenize
from hico.video.preprocess import image_clip
from hico.video.sampling import SamplePlan, SamplingOptions

if TYPE_CHECKING:
    from hico.video.reader import Video

PREFILL_CHUNK = 4096  # prompt tokens per pass through the layers: bounds activation memory whatever the length


class Hico:
    """A loaded model with its tokenizer."""

    def __init__(self, model: HicoModel, tokenizer=None, model_id: str = "", name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id  # fingerprint of the config and weight files
        self.name = name or model_id  # what people call it: the checkpoint folder's name
        self.prefill_chunk: int | None = PREFILL_CHUNK
        self.reuse_prefix = True  # keep each video's prefilled prefix for its next questions
        self.prefix_bytes = PREFIX_BYTES  # at most this much prefix kept per video (`VideoMemory.keep_prefix`)
        self.quantization: str | None = None
        self._store: VideoStore | None = None
        self.stores: weakref.WeakSet[VideoStore] = weakref.WeakSet()  # stores holding memories of this engine

    @property
    def tokens_id(self) -> str:
        """What a video's tokens depend on: the weights and the dtype the tower runs in (int8 leaves the tower
        alone). float32 keeps the bare fingerprint, so that caches written before dtypes were told apart hold."""
        dtype = str(self.model.dtype).removeprefix("torch.")
        return self.model_id if dtype == "float32" else f"{self.model_id}:{dtype}"

    @property
    def variant(self) -> str:
        """What besides the weight files changes the model's numbers: its dtype and quantization."""
        dtype = str(self.model.dtype).removeprefix("torch.")
        return f"{dtype}+{self.quantization}" if self.quantization else dtype

    @torch.inference_mode()
    def encode_video(self, video: str | Path, sampling: SamplingOptions = SamplingOptions(), *,
                     cache_dir: str | Path | None = None, progress: bool = False, **video_options) -> VideoMemory:
        """Decode, encode and compress a video into a VideoMemory (16 tokens per sampled frame)."""
        from hico.video.reader import Video

        size = self.model.config.vision.image_size
        key = None
        if cache_dir is not None:
            key = memory_key(file_digest(video), sampling, size, self.tokens_id)
            cached = load_cached(Path(cache_dir) / f"{key}.safetensors", key)
            if cached is not None:
                return cached
        with Video(video, **video_options) as source:
            plan = source.plan(sampling)
            tokens = self.encode_plan(source, plan, progress=progress)
            memory = VideoMemory(tokens=tokens, indices=list(plan.indices), times=source.times(plan),
                                 time_msg=plan.time_msg, duration=plan.duration, source=str(video), key=key or "")
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            memory.save(Path(cache_dir) / f"{key}.safetensors")
        return memory

    @torch.inference_mode()
    def encode_plan(self, source: Video, plan: SamplePlan, *, progress: bool = False) -> torch.Tensor:
        """The compressed tokens (16 per sampled frame) of an opened video's planned frames, streamed by clips."""
        frames_per_clip = self.model.config.local_num_frames
        chunks, batch = [], []
        bar = tqdm(total=-(-plan.num_frames // frames_per_clip), desc="clips encoded", unit="clip",
                   disable=not progress)
        with bar:
            for clip in source.clips(plan, self.model.config.vision.image_size, frames_per_clip):
                batch.append(clip.pixels)
                if len(batch) == ENCODE_BATCH_CLIPS:
                    chunks.append(self.encode_clip_batch(batch))
                    bar.update(len(batch))
                    batch = []
            if batch:
                chunks.append(self.encode_clip_batch(batch))
                bar.update(len(batch))
        return torch.cat(chunks)

    @torch.inference_mode()
    def encode_clip_batch(self, clips: Sequence[torch.Tensor]) -> torch.Tensor:
        """(clips * 64, hidden) tokens of preprocessed clips, in order (at most ENCODE_BATCH_CLIPS at a time)."""
        return self.model.encode_clips(torch.stack(list(clips))).flatten(0, 1)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(n, 64, hidden): each RGB image shown as one whole clip (repeated on every frame of it)."""
        size, frames = self.model.config.vision.image_size, self.model.config.local_num_frames
        return self.model.encode_clips(torch.stack([image_clip(image, size, frames) for image in images]))

    def live(self, fps: float = 1.0, budget_tokens: int | None = None, *, dropout: DropSchedule | str | None = "off",
             keep_recent_clips: int = 4, score: str = "value_norm", seed: int = 0):
        """A `LiveVideo` (hico.live): push frames as a stream plays, ask at any moment; each clip is encoded and
        prefilled as it completes, so a question prefills only its own tokens. `budget_tokens` bounds the visual
        tokens kept (older ones evicted by `score`, never the `keep_recent_clips` newest clips)."""
        from hico.live import LiveOptions, LiveVideo

        options = LiveOptions(fps=fps, budget_tokens=budget_tokens, keep_recent_clips=keep_recent_clips,
                              score=score, seed=seed)
        return LiveVideo(self, options, dropout)

    def schedule(self, dropout: DropSchedule | str | None = None) -> DropSchedule:
        """The dropout schedule a setting stands for on this model (`HicoConfig.schedule`): None or "default" is
        the checkpoint's inference setting, "model" its configured schedule even where `mm_llm_compress`
        leaves it off, "off" none, or a schedule (any form `DropSchedule.parse` reads); it must fit the depth."""
        return self.model.config.schedule(dropout)

    def prompt_ids(self, memory: VideoMemory, question: str, history: Sequence[tuple[str, str]] = (),
                   prompt: str | None = None) -> torch.Tensor:
        """The chat prompt's ids with one IMAGE_TOKEN_INDEX for the video; `prompt`, when given, is a whole
        prompt text holding `<image>` once (a protocol's own template, e.g. NIAH's), used as is."""
        self._need_tokenizer()
        if prompt is not None:
            if prompt.count(IMAGE) != 1:
                raise HicoError(f"a prompt holds the placeholder {IMAGE} exactly once, found {prompt.count(IMAGE)}")
            return tokenize(prompt, self.tokenizer)
        if not question.strip():
            raise HicoError("the question is empty; ask something about the video")
        if any(IMAGE in text for text in (question, *(t for turn in history for t in turn))):
            raise HicoError(f"the conversation holds the text {IMAGE}, which stands for the video in the prompt; "
                            "remove it from the question and history")
        return tokenize(chat_prompt(question, memory.time_msg, history), self.tokenizer)

    def _need_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise HicoError("this checkpoint folder has no tokenizer files (tokenizer.json or vocab.json + "
                            "merges.txt); copy them from the released model")

    def stream(self, memory: VideoMemory, question: str, history: Sequence[tuple[str, str]] = (), *,
               config: GenerationConfig = GenerationConfig(), dropout: DropSchedule | str | None = None,
               cancel: object = None, prefix_dir: str | Path | None = None,
               prompt: str | None = None) -> AnswerStream:
        """`generate` as an iterator of text pieces; the `Answer` is on the stream once it is exhausted:

            stream = model.stream(memory, "What happens?")
            for piece in stream:
                print(piece, end="", flush=True)
            print(stream.answer.finish_reason)
        """
        return AnswerStream(self._generation(memory, question, history, config, dropout, cancel, prefix_dir,
                                             prompt))

    def generate(self, memory: VideoMemory, question: str, history: Sequence[tuple[str, str]] = (), *,
                 config: GenerationConfig = GenerationConfig(), dropout: DropSchedule | str | None = None,
                 on_token: Callable[[str], None] | None = None, cancel: object = None,
                 prefix_dir: str | Path | None = None, prompt: str | None = None) -> Answer:
        """Answer a question about an encoded video (the chat template, the video's time message, `history`
        as earlier (question, answer) turns).

        `on_token(piece)` receives the text each new token makes visible (streaming). `cancel` (an Event or
        a callable) is polled before every token: when set, generation stops with finish_reason "cancelled".
        `config.stop` strings end the answer (finish_reason "stop"). The prompt up to the end of the visual
        tokens is prefilled once per video and kept on `memory` (and in `prefix_dir` when given), so a later
        question prefills only its own tokens."""
        stream = self.stream(memory, question, history, config=config, dropout=dropout, cancel=cancel,
                             prefix_dir=prefix_dir, prompt=prompt)
        for piece in stream:
            if piece and on_token is not None:
                on_token(piece)
        return stream.answer

    @torch.inference_mode()
    def _generation(self, memory: VideoMemory, question: str, history: Sequence[tuple[str, str]],
                    config: GenerationConfig, dropout: DropSchedule | str | None, cancel: object,
                    prefix_dir: str | Path | None, prompt: str | None) -> Iterator[str]:
        elapsed = timed()
        input_ids = self.prompt_ids(memory, question, history, prompt)
        schedule = self.schedule(dropout)
        prefill = self.prefill(memory, input_ids, schedule, prefix_dir=prefix_dir)
        prefilled = elapsed()
        self.model.prepare_decoding(prefill.cache, config.max_new_tokens)
        step = lambda token: self.model.decode_step(torch.tensor([[token]]), prefill.cache)[0, -1]  # noqa: E731
        text = TextStream(self.tokenizer, config.stop)
        first: float | None = None
        decoding = run_decoding(step, prefill.logits[0, -1], config, self.stop_ids(), text, cancel,
                                nonfinite=self._nonfinite_decoding)
        while True:
            try:
                piece = next(decoding)
            except StopIteration as done:
                finish = done.value
                break
            if first is None:
                first = elapsed()
            yield piece
        total = elapsed()
        first = first if first is not None else total
        visual = int(memory.tokens.shape[0])
        return Answer(text=text.text.strip(), token_ids=tuple(text.tokens),
                      prompt_tokens=int(input_ids.numel()) - 1 + visual, completion_tokens=len(text.tokens),
                      finish_reason=finish, visual_tokens=visual,
                      timings=Timings(prefill_s=prefilled, decode_s=total - first, first_token_s=first))

    def _nonfinite_decoding(self) -> Exception:
        """The error for NaN/inf logits while decoding, with the likely cause (damaged weights, float16)."""
        return NonFiniteError("decoding (the logits of a new token)", str(self.model.dtype).removeprefix("torch."),
                              nonfinite_cause(self.model, self.model.llm))

    @torch.inference_mode()
    def answer(self, memory: VideoMemory, question: str, history: Sequence[tuple[str, str]] = (),
               options: GenerationConfig = GenerationConfig(), *, dropout: DropSchedule | str | None = None,
               on_text: Callable[[str], None] | None = None, prefix_dir: str | Path | None = None) -> str:
        """The answer's text alone (`generate` gives the counts, finish reason and timings too)."""
        return self.generate(memory, question, history, config=options, dropout=dropout, on_token=on_text,
                             prefix_dir=prefix_dir).text

    @torch.inference_mode()
    def likelihood(self, memory: VideoMemory, question: str, continuation: str | Sequence[int],
                   history: Sequence[tuple[str, str]] = (), *, dropout: DropSchedule | str | None = None,
                   prompt: str | None = None) -> Likelihood:
        """Teacher-forced: the log-probability of `continuation` (text, or token ids) after the prompt, token
        by token, with the arg-max token at each of its positions."""
        input_ids = self.prompt_ids(memory, question, history, prompt)
        target = list(continuation) if not isinstance(continuation, str) else \
            self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not target:
            raise HicoError("the continuation to score is empty")
        prefill = self.prefill(memory, input_ids, self.schedule(dropout))
        rows = prefill.logits[0, -1:]
        if len(target) > 1:
            rows = torch.cat([rows, self.model.decode(torch.tensor([target[:-1]]), prefill.cache)[0]])
        logprobs = torch.log_softmax(rows.float(), dim=-1)
        picked = logprobs[torch.arange(len(target)), torch.tensor(target, device=logprobs.device)]
        return Likelihood(token_ids=tuple(target), token_logprobs=tuple(picked.tolist()),
                          argmax_ids=tuple(rows.argmax(dim=-1).tolist()))

    def score(self, memory: VideoMemory, question: str, continuation: str | Sequence[int],
              history: Sequence[tuple[str, str]] = (), *, dropout: DropSchedule | str | None = None,
              prompt: str | None = None) -> float:
        """The summed log-probability of `continuation` after the question (teacher-forced)."""
        return self.likelihood(memory, question, continuation, history, dropout=dropout, prompt=prompt).logprob

    def generate_many(self, requests: Iterable[Request], store: VideoStore | None = None) -> Iterator[Completion]:
        """Answer requests in order, one `Completion` each (an error for that request is on its completion,
        not raised). A request names its video by an encoded `VideoMemory` or by a path, which `store` (by
        default the engine's own) decodes and encodes, or takes from its cache. This is the `Engine`
        interface that eval and serve call; another backend can stand behind it."""
        store = store if store is not None else self.store
        for request in requests:
            started = timed()
            try:
                if isinstance(request.video, VideoMemory):
                    stored = Stored(request.video, "given", 0.0)
                else:
                    stored = store.get(request.video, request.sampling, **dict(request.video_options))
                answer = self.generate(stored.memory, request.question, request.history, config=request.config,
                                       dropout=request.dropout, prompt=request.prompt, cancel=request.cancel,
                                       on_token=request.on_token, prefix_dir=request.prefix_dir)
            except HicoError as exc:
                yield Completion(request, None, exc, None, started())
                continue
            yield Completion(request, answer, None, stored, started())

    @property
    def store(self) -> VideoStore:
        """The engine's default `VideoStore` (in memory only; made on first use)."""
        if self._store is None:
            self._store = VideoStore(self)
        return self._store

    @torch.inference_mode()
    def prefill(self, memory: VideoMemory, input_ids: torch.Tensor, schedule: DropSchedule, *,
                prefix_dir: str | Path | None = None) -> Prefill:
        """Prefill a prompt with one `<image>` placeholder for `memory`, reusing the video's prefix if kept."""
        if not self.reuse_prefix:
            embeds, span = self.model.embed(input_ids, memory.tokens)
            return self.model.prefill(embeds, span, schedule, chunk=self.prefill_chunk)
        at = int((input_ids == IMAGE_TOKEN_INDEX).nonzero()[0])
        prefix = self.video_prefix(memory, input_ids[:at + 1], schedule, prefix_dir=prefix_dir)
        rest = self.model.llm.model.embed_tokens(input_ids[at + 1:].to(self.model.device))[None]
        return self.model.prefill_after(prefix, rest, schedule, chunk=self.prefill_chunk)

    @torch.inference_mode()
    def video_prefix(self, memory: VideoMemory, prefix_ids: torch.Tensor, schedule: DropSchedule, *,
                     prefix_dir: str | Path | None = None) -> VideoPrefix:
        """The prefilled prompt prefix `prefix_ids` (ending with `<image>`) for `memory`: kept on the memory,
        read from or written to `prefix_dir` when given, else computed."""
        ids = prefix_ids.tolist()
        key = prefix_key(memory.key or f"tokens@{memory.tokens.data_ptr()}:{tuple(memory.tokens.shape)}",
                         self.model_id, self.variant, schedule, ids)
        prefix = memory.prefixes.get(key)
        path = None
        if prefix is None and prefix_dir is not None:
            disk_key = prefix_key(memory.content_key(), self.model_id, self.variant, schedule, ids)
            path = Path(prefix_dir) / f"{disk_key}.prefix.safetensors"
            prefix = load_prefix(path, self.model.device)
        if prefix is None:
            embeds, span = self.model.embed(prefix_ids, memory.tokens)
            prefix = self.model.prefill_prefix(embeds, span, schedule, chunk=self.prefill_chunk)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_prefix(prefix, path)
        memory.keep_prefix(key, prefix, self.prefix_bytes)
        for store in list(self.stores):
            store.resized(memory)  # a store's budget counts the prefixes its memories keep
        return prefix

    def chat(self, video: str | Path, question: str, sampling: SamplingOptions = SamplingOptions(),
             options: GenerationConfig = GenerationConfig(), *, cache_dir: str | Path | None = None,
             **kwargs) -> str:
        """Encode a video and answer one question; with `cache_dir`, both the video's tokens and its
        prefilled prefix are kept there for the next question."""
        memory = self.encode_video(video, sampling, cache_dir=cache_dir)
        return self.answer(memory, question, options=options, prefix_dir=cache_dir, **kwargs)

    def stop_ids(self) -> set[int]:
        ids = set()
        eos = self.model.config.official.get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer is not None:
            im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
            if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
                ids.add(im_end)
            if self.tokenizer.eos_token_id is not None:
                ids.add(self.tokenizer.eos_token_id)
        return ids


def load(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", *,
         revision: str | None = None, quantize: str | None = None, vision_only: bool = False) -> Hico:
    """Load a VideoChat-Flash checkpoint, a folder (official layout) or a Hub id such as
    "OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448" (downloaded once into the Hub cache, `revision` a branch, tag
    or commit), with its tokenizer, if present; `quantize="int8"` stores the LLM's linear weights in int8
    (`hico.quantize`). `vision_only` loads the tower and projector alone (the LLM's weights stay unread and
    unallocated): a model that encodes videos for another engine (`hico.vllm.engine`), and cannot answer."""
    hub = is_hub_id(path)
    folder = resolve_checkpoint(path, revision)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; pass the folder of a downloaded checkpoint")
    config = HicoConfig.from_folder(folder)
    state = load_state_dict(folder, vision_only)
    with torch.device("meta"):
        model = HicoModel(config)
    expected = {k: v.shape for k, v in model.state_dict().items() if not (vision_only and k.startswith("llm."))}
    tied = {"llm.lm_head.weight"} if config.llm.get("tie_word_embeddings") else set()
    check_state_dict(expected, state, str(folder), optional=tied, vision_prefix=config.vision_prefix)
    if vision_only:
        for part in (model.vision, model.projector):
            part.to_empty(device=device).to(dtype)
        model.load_state_dict(state, strict=False)
        model.vision.reset_buffers(model.device)
        return Hico(model.eval(), load_tokenizer(folder), _fingerprint(folder),
                    str(path) if hub else _folder_name(folder))
    model = model.to_empty(device=device).to(dtype)
    model.load_state_dict(state, strict=False)
    if tied and "llm.lm_head.weight" not in state:
        model.llm.lm_head.weight = model.llm.model.embed_tokens.weight
    model.reset_buffers()
    if (folder / "adapter_model.safetensors").exists():
        from hico.train.lora import apply_adapter

        apply_adapter(model, folder)  # a LoRA training checkpoint: merged into the weights on load
    model.eval()
    hico = Hico(model, load_tokenizer(folder), _fingerprint(folder), str(path) if hub else _folder_name(folder))
    if quantize:
        from hico.quantize import quantize_llm

        quantize_llm(model, quantize)
        hico.quantization = quantize
    return hico


def _folder_name(folder: Path) -> str:
    """What people call a checkpoint folder: its name, or "embedded" for the shipped toy model (in `weights/`)."""
    from hico.embedded import WEIGHTS

    return "embedded" if folder.resolve() == WEIGHTS else folder.resolve().name


def load_tokenizer(folder: Path):
    """The checkpoint's tokenizer, or None when the folder has no tokenizer files."""
    if not ((folder / "tokenizer.json").exists() or (folder / "vocab.json").exists()):
        return None
    from transformers import AutoTokenizer, PretrainedConfig
    from transformers.utils import logging as hf_logging

    # Without a tokenizer_class, AutoTokenizer reads config.json (whose model_type transformers does not know,
    # and whose rope_scaling it may fail to parse); with one, config.json is not needed and is kept out.
    settings = folder / "tokenizer_config.json"
    named = settings.exists() and "tokenizer_class" in json.loads(settings.read_text(encoding="utf-8"))
    extra = {"config": PretrainedConfig()} if named else {}
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **extra)
    finally:
        hf_logging.set_verbosity(previous)


def _fingerprint(folder: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update((folder / "config.json").read_bytes())
    for weights in weight_files(folder):
        digest.update(json.dumps([weights.name, weights.stat().st_size, weights.stat().st_mtime_ns]).encode())
    return digest.hexdigest()
