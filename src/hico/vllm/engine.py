"""`VllmEngine`: the engine interface of eval and serve (`generate_many`, `generate`) with vLLM generating.

hico's own tower encodes (the `VideoStore` with its prefetching and caches, exactly as with `--engine hico`;
only the vision side is loaded, the LLM stays unmaterialised); vLLM's LLM answers from the visual tokens,
given to it as video embeddings after the official prompt's `<image>`. Requests are added to vLLM's engine
together (a benchmark's questions go in as one batch, bounded by `max_batch_bytes` of visual tokens in
flight), so its continuous batching, paged KV cache and prefix caching work across them. `generate` streams
text pieces and honours `cancel`, for `hico serve --engine vllm`.

In-LLM dropout is not run: the default setting answers without it (with a warning where the checkpoint's
config turns it on), and asking for a schedule is an error.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
import vllm

from hico.api import Hico, load
from hico.checkpoint import resolve_checkpoint
from hico.dropout import DropSchedule
from hico.engine import Completion, Request
from hico.errors import HicoError, OptionError
from hico.generate import Answer, GenerationConfig, Timings, timed
from hico.memory import VideoMemory
from hico.prompt import chat_prompt
from hico.store import Stored, VideoStore

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 4 << 30  # visual tokens handed to vLLM at once (a benchmark larger than this goes in parts)


class VllmEngine:
    """`generate_many` and `generate` on vLLM; everything else (the store's encoding, the tokenizer, names)
    is the wrapped vision-only `Hico`'s."""

    batched = True  # eval hands it the whole run at once

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu", *,
                 revision: str | None = None, max_batch_bytes: int = MAX_BATCH_BYTES, **engine_args) -> None:
        self.encoder: Hico = load(path, dtype, device, revision=revision, vision_only=True)
        folder = resolve_checkpoint(path, revision)
        args = dict(model=str(folder), dtype=str(dtype).removeprefix("torch."), enable_mm_embeds=True,
                    limit_mm_per_prompt={"video": 1, "image": 1}, seed=0)
        args.update(engine_args)
        self.llm = vllm.LLM(**args)
        self.max_batch_bytes = max_batch_bytes
        self._ids = itertools.count()

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

    def close(self, timeout: float = 15.0) -> None:
        """Stop vLLM's engine processes (its engine core and workers) and wait for them: left to interpreter exit,
        a server stopped by SIGTERM leaves them running. Those still up after `timeout` seconds are killed."""
        import psutil  # a vLLM dependency

        children = [child for child in psutil.Process().children(recursive=True) if _is_vllm(child)]
        self.llm.llm_engine.engine_core.shutdown()
        _, alive = psutil.wait_procs(children, timeout=timeout)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)

    @property
    def store(self) -> VideoStore:
        return self.encoder.store

    def schedule(self, dropout: DropSchedule | str | None = None) -> DropSchedule:
        """Only "no dropout": vLLM runs every layer on every visual token."""
        setting = DropSchedule.parse(dropout)
        if setting == "default" or (isinstance(setting, DropSchedule) and not setting.enabled):
            if setting == "default" and self.encoder.model.config.dropout.enabled:
                log.warning("%s: vLLM runs the LLM without the in-LLM dropout its config turns on; answers "
                            "equal hico's with --dropout off", self.encoder.name)
            return DropSchedule()
        raise OptionError("--engine vllm runs without in-LLM visual-token dropout; use --dropout off (or "
                          "--engine hico for dropout)")

    # --- one request, streamed --------------------------------------------------------------------------------
    def generate(self, memory: VideoMemory, question: str, history: Sequence[tuple[str, str]] = (), *,
                 config: GenerationConfig = GenerationConfig(), dropout: DropSchedule | str | None = None,
                 on_token: Callable[[str], None] | None = None, cancel: object = None,
                 prefix_dir: str | Path | None = None, prompt: str | None = None) -> Answer:
        """`Hico.generate` on vLLM: `on_token` gets each new piece of text, `cancel` is polled between steps
        (the request is then aborted: finish_reason "cancelled"). `prefix_dir` is not used: vLLM's prefix
        cache keeps prompt prefixes."""
        self.schedule(dropout)
        request_id = f"hico-{next(self._ids)}"
        elapsed = timed()
        engine = self.llm.llm_engine
        engine.add_request(request_id, self._prompt(memory, question, history, prompt), _sampling(config))
        shown, first, final = 0, None, None
        while final is None:
            if _cancelled(cancel):
                engine.abort_request([request_id])
                return self._answer(memory, final, "cancelled", elapsed(), first)
            for output in engine.step():
                if output.request_id != request_id:
                    continue
                text = output.outputs[0].text
                if len(text) > shown:
                    first = first if first is not None else elapsed()
                    if on_token is not None:
                        on_token(text[shown:])
                    shown = len(text)
                if output.finished:
                    final = output
        return self._answer(memory, final, None, elapsed(), first)

    # --- many requests, batched -------------------------------------------------------------------------------
    def generate_many(self, requests: Iterable[Request], store: VideoStore | None = None) -> Iterator[Completion]:
        """Answers in request order. Videos come from `store` (by default the encoder's own), requests go to
        vLLM together, up to `max_batch_bytes` of visual tokens at a time; an error for a request (its video
        unreadable, its options wrong) is on its completion."""
        store = store if store is not None else self.encoder.store
        pending: list[tuple[Request, Stored | None, HicoError | None, float]] = []
        held = 0
        for request in requests:
            started = timed()
            try:
                self.schedule(request.dropout)
                stored = Stored(request.video, "given", 0.0) if isinstance(request.video, VideoMemory) else \
                    store.get(request.video, request.sampling, **dict(request.video_options))
                pending.append((request, stored, None, started()))
                held += stored.memory.tokens.nbytes
            except HicoError as exc:
                pending.append((request, None, exc, started()))
            if held >= self.max_batch_bytes:
                yield from self._run(pending)
                pending, held = [], 0
        yield from self._run(pending)

    def _run(self, pending: list[tuple[Request, Stored | None, HicoError | None, float]]) -> Iterator[Completion]:
        elapsed = timed()
        asked = [(r, s) for r, s, error, _ in pending if error is None]
        prompts = [self._prompt(s.memory, r.question, r.history, r.prompt) for r, s in asked]
        outputs = iter(self.llm.generate(prompts, [_sampling(r.config) for r, _ in asked], use_tqdm=False)
                       if prompts else [])
        share = elapsed() / max(len(asked), 1)
        for request, stored, error, seconds in pending:
            if error is not None:
                yield Completion(request, None, error, None, seconds)
                continue
            answer = self._answer(stored.memory, next(outputs), None, share, None)
            yield Completion(request, answer, None, stored, seconds + share)

    # --- helpers ----------------------------------------------------------------------------------------------
    def _prompt(self, memory: VideoMemory, question: str, history: Sequence[tuple[str, str]],
                prompt: str | None) -> dict:
        """The official prompt text (time message included) with the video's tokens as its embeddings."""
        if prompt is None:
            prompt = chat_prompt(question, memory.time_msg, history)
        elif prompt.count("<image>") != 1:
            raise OptionError("a whole prompt must hold <image> exactly once, where the video goes")
        return {"prompt": prompt, "multi_modal_data": {"video": memory.tokens.detach().to("cpu")[None]}}

    def _answer(self, memory: VideoMemory, output, reason: str | None, seconds: float,
                first: float | None) -> Answer:
        completion = output.outputs[0] if output is not None else None
        ids = tuple(completion.token_ids) if completion is not None else ()
        if ids and ids[-1] in self.encoder.stop_ids():
            ids = ids[:-1]
        finish = reason or ("length" if completion is not None and completion.finish_reason == "length" else "stop")
        prompt_tokens = len(output.prompt_token_ids) if output is not None else 0
        first = first if first is not None else seconds
        return Answer(text=(completion.text if completion is not None else "").strip(), token_ids=ids,
                      prompt_tokens=prompt_tokens, completion_tokens=len(ids), finish_reason=finish,
                      visual_tokens=int(memory.tokens.shape[0]),
                      timings=Timings(prefill_s=first, decode_s=seconds - first, first_token_s=first))


def _is_vllm(process) -> bool:
    """vLLM names its processes VLLM::EngineCore, VLLM::Worker, ... (hico's decode workers are left alone)."""
    try:
        return process.name().startswith("VLLM")
    except Exception:  # gone already, or not ours to read
        return False


def _sampling(config: GenerationConfig) -> vllm.SamplingParams:
    if config.greedy:
        return vllm.SamplingParams(max_tokens=config.max_new_tokens, temperature=0.0, stop=list(config.stop),
                                   seed=config.seed)
    return vllm.SamplingParams(max_tokens=config.max_new_tokens, temperature=config.temperature,
                               top_p=config.top_p, stop=list(config.stop), seed=config.seed)


def _cancelled(cancel: object) -> bool:
    if cancel is None:
        return False
    return bool(cancel()) if callable(cancel) else bool(cancel.is_set())
