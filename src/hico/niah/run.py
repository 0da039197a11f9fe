"""Answer every case of a NIAH benchmark folder with a hico model; results go to a resumable JSONL file.

The protocol is the official one: the prompt holds the visual tokens and the question with no time message
(`hico.prompt.niah_prompt`), the answer letter is teacher-forced, the arg-max tokens at the answer positions
are decoded, lower-cased and stripped of parentheses, and must equal the lower-cased answer exactly. In-LLM
dropout is off by default, as in the official evaluation; `dropout="model"` uses the schedule the checkpoint
configures (`llm_compress_*`), whether or not its `mm_llm_compress` turns it on for chat; "default" is the
checkpoint's inference setting, and a `DropSchedule` (or a kind with layers and ratios on the command line)
any other schedule. Scoring and generation are the engine's (`Hico.likelihood`, `Hico.generate`). `answer="open"`
(not the official protocol) asks each question without its options and compares the greedy answer with the
right option's text, for models that answer in words.

Embedding mode encodes the haystack once (cached in the benchmark folder's `cache/`, keyed by the haystack's
content, the frames taken and the model) and splices each needle's 64 tokens in at clip boundaries. Video
mode encodes each case's video file like any video, sampling every frame. One `VideoStore` decodes the
haystack and every case video in one kept decode worker process.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from hico.api import Hico
from hico.atomic import append_line
from hico.clips import FRAMES_PER_CLIP, TOKENS_PER_FRAME
from hico.dropout import DropSchedule
from hico.errors import HicoError, OptionError
from hico.generate import GenerationConfig
from hico.memory import VideoMemory, file_digest, load_cached
from hico.niah.build import haystack_indices, haystack_plan, load_benchmark
from hico.prompt import niah_prompt
from hico.records import Peak, read_records
from hico.store import VideoStore
from hico.video.preprocess import read_image
from hico.video.reader import Video
from hico.video.sampling import SamplingOptions

ANSWERS = ("letter", "open")
OPEN_MAX_TOKENS = 16

read_results = read_records  # the name report.py, bench/ and the tests read results files by


@dataclass(frozen=True)
class RunOptions:
    # "off" (the official protocol), "model" (the checkpoint's llm_compress_* schedule), "default" (the
    # checkpoint's inference setting), or a DropSchedule; anything `DropSchedule.parse` reads
    dropout: str | DropSchedule = "off"
    limit: int | None = None  # answer at most this many new cases, then stop (a later run resumes)
    progress: bool = True
    answer: str = "letter"  # "letter" (official: the option letter) or "open" (the question without options)

    def __post_init__(self) -> None:
        DropSchedule.parse(self.dropout)  # an unknown setting fails here, before a model is loaded
        if self.answer not in ANSWERS:
            raise OptionError(f"unknown answer mode {self.answer!r}: use letter or open")
        if self.limit is not None and self.limit < 1:
            raise OptionError(f"--limit must be at least 1 case, got {self.limit}")


def normalize_answer(text: str) -> str:
    """The official scoring's normalisation: lower case, parentheses removed."""
    return text.lower().replace("(", "").replace(")", "")


def default_results(folder: str | Path, model: Hico, answer: str = "letter") -> Path:
    suffix = "" if answer == "letter" else f"-{answer}"
    return Path(folder) / f"results-{model.model_id[:12] or 'model'}{suffix}.jsonl"


def open_question(question: str, letter: str) -> tuple[str, str]:
    """A 4-option question without its options, and the text of option `letter` (the expected open answer)."""
    stem, found, block = question.partition("\nOptions: ")
    options = dict(re.findall(r"^\(([A-Z])\) (.*)$", block, flags=re.MULTILINE)) if found else {}
    if letter not in options:
        raise HicoError(f"cannot ask {question[:60]!r}... openly: no option ({letter}) in an 'Options:' block")
    return stem, options[letter]


def dropout_label(setting: str | DropSchedule, schedule: DropSchedule) -> str:
    """What a result's "dropout" field says: "off", "model" for the checkpoint's schedule (asked for as "model"
    or "default"), else the schedule as the command line spells it."""
    if not schedule.enabled:
        return "off"
    return "model" if setting in ("model", "default") else schedule.describe()


def run(folder: str | Path, model: Hico, results: str | Path | None = None,
        options: RunOptions = RunOptions()) -> Path:
    """Answer the cases that `results` does not hold yet; returns the results path."""
    folder = Path(folder)
    settings, cases = load_benchmark(folder)
    if model.tokenizer is None:
        raise HicoError("the model folder has no tokenizer; NIAH needs one to read the questions")
    results = Path(results) if results is not None else default_results(folder, model, options.answer)
    done = read_results(results)
    others = {r.get("model") for r in done} - {model.model_id}
    if others:
        raise OptionError(f"{results} holds results of another model; pass a new --results file for this one")
    modes = {r.get("answer_mode", "letter") for r in done} - {options.answer}
    if modes:
        raise OptionError(f"{results} holds {', '.join(modes)}-answer results; pass a new --results file")
    finished = {r["case"] for r in done}
    todo = [case for case in cases if case["case"] not in finished][: options.limit]
    setting = DropSchedule.parse(options.dropout)
    schedule = model.schedule(setting)
    # One kept decode worker for the haystack and every case video; a case video's memory is used by its
    # questions only, so the store keeps just the newest (memory_bytes=0) and writes nothing to disk.
    with VideoStore(model, memory_bytes=0) as store:
        haystack = _haystack_tokens(folder, settings, store, options.progress) \
            if settings["mode"] == "embedding" else None
        _answer_cases(folder, todo, haystack, store, model, schedule, dropout_label(setting, schedule), results,
                      options)
    return results


def _answer_cases(folder: Path, todo: list[dict], haystack: torch.Tensor | None, store: VideoStore, model: Hico,
                  schedule: DropSchedule, label: str, results: Path, options: RunOptions) -> None:
    needles: dict[str, torch.Tensor] = {}
    peak = Peak()
    bar = tqdm(todo, desc="cases answered", unit="case", disable=not options.progress)
    right = total = 0
    for case in bar:
        peak.reset()
        start = time.perf_counter()
        if haystack is None:
            memory = _video_memory(folder, case, store)
        else:
            tokens = splice(haystack, [_needle_tokens(model, path, needles) for path in case["images"]],
                            case["offsets"], case["frames"])
            memory = visual_memory(tokens, source=case["case"])
        if options.answer == "open":
            asked = [open_question(q, a) for q, a in zip(case["questions"], case["answers"])]
            expected = [text for _, text in asked]
            predictions = [ask_open(model, memory, stem, schedule) for stem, _ in asked]
            correct = [p.strip().lower() == e.lower() for p, e in zip(predictions, expected)]
        else:
            expected = case["answers"]
            predictions = [ask(model, memory, q, a, schedule) for q, a in zip(case["questions"], expected)]
            correct = [normalize_answer(p) == a.lower() for p, a in zip(predictions, expected)]
        peaks = peak.fields()
        record = {
            "case": case["case"], "kind": case["kind"], "frames": case["frames"], "depth": case["depth"],
            "needle": case["needle"], "answers": expected, "answer_mode": options.answer,
            "predictions": predictions,
            "correct": correct, "visual_tokens": int(memory.tokens.shape[0]),
            "seconds": round(time.perf_counter() - start, 3), "peak_rss_mb": peaks.pop("peak_rss_mb"),
            "model": model.model_id, "model_name": model.name, "dropout": label, **peaks,
        }
        # `hico.records.append_record` in substance; called by this name, which the interruption tests replace
        append_line(results, json.dumps(record))  # whole lines only: a kill never leaves a half result
        right, total = right + sum(correct), total + len(correct)
        bar.set_postfix(accuracy=f"{right / total:.1%}")


def splice(haystack: torch.Tensor, needles: Sequence[torch.Tensor], offsets: Sequence[int],
           frames: int) -> torch.Tensor:
    """The first `frames` frames of haystack tokens (16 a frame, repeated from the start when too short) with
    each needle's 64 tokens inserted before haystack frame `offsets[k]`."""
    per_clip = TOKENS_PER_FRAME * FRAMES_PER_CLIP
    if haystack.shape[0] % per_clip or haystack.shape[0] == 0:
        raise ValueError(f"haystack tokens must be whole clips of {per_clip}, got {haystack.shape[0]}")
    parts, at = [], 0
    for offset, needle in zip(offsets, needles):
        parts += [_haystack_span(haystack, at * TOKENS_PER_FRAME, offset * TOKENS_PER_FRAME), needle]
        at = offset
    parts.append(_haystack_span(haystack, at * TOKENS_PER_FRAME, frames * TOKENS_PER_FRAME))
    return torch.cat(parts)


def _haystack_span(haystack: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    if stop <= haystack.shape[0]:
        return haystack[start:stop]
    return haystack[torch.arange(start, stop) % haystack.shape[0]]


def visual_memory(tokens: torch.Tensor, source: str = "") -> VideoMemory:
    """Spliced visual tokens (16 a frame) as a VideoMemory the engine answers about: the NIAH prompt has no time
    message, so the frames carry positions, not times. The memory keeps its prefilled prefix for the case's
    next question (multi-hop)."""
    frames = tokens.shape[0] // TOKENS_PER_FRAME
    return VideoMemory(tokens=tokens, indices=list(range(frames)), times=[], time_msg="", duration=0.0,
                       source=source, key="")


def ask(model: Hico, visual: VideoMemory | torch.Tensor, question: str, answer: str,
        schedule: DropSchedule) -> str:
    """The decoded arg-max tokens at the answer's positions, the answer teacher-forced (official scoring)."""
    memory = visual if isinstance(visual, VideoMemory) else visual_memory(visual)
    scored = model.likelihood(memory, "", answer, prompt=niah_prompt(question), dropout=schedule)
    return model.tokenizer.decode(list(scored.argmax_ids))


def ask_open(model: Hico, visual: VideoMemory | torch.Tensor, question: str, schedule: DropSchedule) -> str:
    """The greedy answer (at most OPEN_MAX_TOKENS tokens) to a question asked without options, decoded whole
    and unstripped as results files have always held it (scoring strips it)."""
    memory = visual if isinstance(visual, VideoMemory) else visual_memory(visual)
    answer = model.generate(memory, "", prompt=niah_prompt(question),
                            config=GenerationConfig(max_new_tokens=OPEN_MAX_TOKENS), dropout=schedule)
    return model.tokenizer.decode(list(answer.token_ids), skip_special_tokens=True)


def _haystack_tokens(folder: Path, settings: dict, store: VideoStore, progress: bool) -> torch.Tensor:
    """The haystack's tokens, cached in the benchmark's cache/ as haystack-<key>.safetensors (the key: its
    content, the frames taken, the tower's input size, the model) and decoded by the store's kept worker."""
    hay = settings["haystack"]
    path = Path(hay["path"])
    if not path.exists():
        raise OptionError(f"{path}: the haystack video of this benchmark is gone; restore it or rebuild")
    if file_digest(path) != hay["digest"]:
        raise OptionError(f"{path}: the haystack video changed since the benchmark was built; rebuild it")
    needed = max(settings["grid"]["frames"])
    count = needed if needed <= hay["unique_frames"] else hay["unique_frames"] // FRAMES_PER_CLIP * FRAMES_PER_CLIP
    if count < FRAMES_PER_CLIP:
        raise OptionError(f"{path}: the haystack has fewer than {FRAMES_PER_CLIP} frames; use a longer video")
    key = store.key(hay["digest"], ("niah", hay["step"], count))
    cached = folder / "cache" / f"haystack-{key}.safetensors"
    memory = load_cached(cached, key)
    if memory is not None:
        return memory.tokens
    indices = tuple(haystack_indices(hay["step"], hay["unique_frames"], count))
    with Video(path, worker=store.decoder) as video:
        plan = haystack_plan(video, indices)
        tokens = store.engine.encode_plan(video, plan, progress=progress)
        memory = VideoMemory(tokens=tokens, indices=list(indices), times=video.times(plan), time_msg=plan.time_msg,
                             duration=plan.duration, source=str(path), key=key)
    cached.parent.mkdir(exist_ok=True)
    memory.save(cached)
    return tokens


def _needle_tokens(model: Hico, path: str, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    if path not in cache:
        cache[path] = model.encode_images([read_image(path)])[0]
    return cache[path]


def _video_memory(folder: Path, case: dict, store: VideoStore) -> VideoMemory:
    path = folder / case["video"]
    if not path.exists():
        raise OptionError(f"{path}: a case video is missing; rebuild the benchmark")
    return store.get(path, SamplingOptions.plain(num_frames=case["total_frames"])).memory
