"""What the vLLM plugin's tests share: the models (the embedded one and every conformance fixture's, given a
tokenizer), hico's own answers to compare with, and an engine started once per model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import hico
from hico.embedded import WEIGHTS
from hico.synthetic.checkpoints import write_random_checkpoint
from hico.video.sampling import SamplingOptions

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
FIXTURES = {"umt224-tiny": CONFORMANCE / "umt224-tiny", "iv2-tiny": CONFORMANCE / "pending" / "iv2-tiny"}
KV_CACHE_BYTES = 1 << 30  # vLLM on CPU otherwise takes most of the machine's memory for its KV cache
MAX_MODEL_LEN = 16384


WIDE = "+wide"  # a conformance fixture's config with the LLM widened to head_dim 32


def checkpoint(name: str, work: Path) -> Path:
    """A folder vLLM and hico both load: the embedded model; or, for "FIXTURE+wide", a conformance fixture's
    config (its tower: UMT at 224 or InternVideo2) with the LLM 128 wide instead of 64, random weights and a
    byte-level BPE tokenizer. vLLM's CPU attention takes head_dim 32 and up; the fixtures' LLMs have 16 (their
    tower and projector are checked against the official tensors by `test_vision_side_equals_the_official_code`)."""
    if name == "embedded":
        return WEIGHTS
    folder = work / name
    if not (folder / "tokenizer.json").exists():
        config = json.loads((FIXTURES[name.removesuffix(WIDE)] / "config.json").read_text())
        config.update(hidden_size=128, intermediate_size=320)
        write_random_checkpoint(folder, config, seed=7)
    return folder


@dataclass(frozen=True)
class Reference:
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # each generated token's log-probability (teacher-forced)
    prompt_tokens: int


def hico_answer(model: hico.Hico, video, question: str, max_new_tokens: int = 24,
                history: tuple[tuple[str, str], ...] = (), sampling: SamplingOptions = SamplingOptions()) -> Reference:
    """hico's own greedy answer with in-LLM dropout off, and the log-probability of each of its tokens."""
    memory = model.encode_video(video, sampling) if not isinstance(video, hico.VideoMemory) else video
    answer = model.generate(memory, question, history, dropout="off",
                            config=hico.GenerationConfig(max_new_tokens=max_new_tokens))
    likelihood = model.likelihood(memory, question, list(answer.token_ids), history, dropout="off")
    return Reference(answer.text, answer.token_ids, likelihood.token_logprobs, answer.prompt_tokens)


def engine_kwargs(**extra) -> dict:
    return dict(dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, max_num_seqs=8,
                kv_cache_memory_bytes=KV_CACHE_BYTES, allowed_local_media_path="/", seed=0, **extra)


def without_stop(token_ids, stop_ids: set[int]) -> tuple[int, ...]:
    """vLLM's output ids end with the stop token when it stopped on one; hico's leave it out."""
    ids = tuple(token_ids)
    return ids[:-1] if ids and ids[-1] in stop_ids else ids
