"""Answer every case of a NIAH benchmark folder with a hico model; results go to a resumable JSONL file.

The protocol is the official one: the prompt holds the visual tokens and the question with no time message
(`hico.prompt.niah_prompt`), the answer letter is teacher-forced, the arg-max tokens at the answer positions
are decoded, lower-cased and stripped of parentheses, and must equal the lower-cased answer exactly. In-LLM
dropout is off by default, as in the official evaluation; `dropout="model"` uses the schedule the checkpoint
configures (`llm_compress_*`), whether or not its `mm_llm_compress` turns it on for chat. `answer="open"`
(not the official protocol) asks each question without its options and compares the greedy answer with the
right option's text, for models that answer in words.

Embedding mode encodes the haystack once (cached in the benchmark folder's `cache/`, keyed by the haystack's
content, the frames taken and the model) and splices each needle's 64 tokens in at clip boundaries. Video
mode encodes each case's video file like any video, sampling every frame.
"""

from __future__ import annotations

import json
import re
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from hico.api import Hico
from hico.atomic import append_line, read_jsonl
from hico.compress import DropSchedule
from hico.errors import HicoError, OptionError
from hico.memory import VideoMemory, file_digest, load_cached, memory_key
from hico.niah.build import CLIP, haystack_indices, haystack_plan, load_benchmark
from hico.prompt import niah_prompt, tokenize
from hico.video.preprocess import read_image
from hico.video.sampling import SamplingOptions

TOKENS_PER_FRAME = 16
DROPOUTS = ("off", "model")
ANSWERS = ("letter", "open")
OPEN_MAX_TOKENS = 16


@dataclass(frozen=True)
class RunOptions:
    dropout: str = "off"  # "off" (the official protocol) or "model" (the checkpoint's in-LLM dropout)
    limit: int | None = None  # answer at most this many new cases, then stop (a later run resumes)
    progress: bool = True
    answer: str = "letter"  # "letter" (official: the option letter) or "open" (the question without options)

    def __post_init__(self) -> None:
        if self.dropout not in DROPOUTS:
            raise OptionError(f"unknown dropout setting {self.dropout!r}: use off or model")
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


def read_results(path: str | Path) -> list[dict]:
    """Finished results; a last line cut off by an interrupted run is dropped (and trimmed from the file)."""
    return read_jsonl(path)


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
    schedule = model.model.config.dropout_schedule if options.dropout == "model" else DropSchedule()
    if options.dropout == "model" and not schedule.enabled:
        raise OptionError("--dropout model: the checkpoint's config.json sets no in-LLM dropout "
                          "(llm_compress_layer_list); use --dropout off")
    haystack = _haystack_tokens(folder, settings, model, options.progress) if settings["mode"] == "embedding" \
        else None
    needles: dict[str, torch.Tensor] = {}
    bar = tqdm(todo, desc="cases answered", unit="case", disable=not options.progress)
    right = total = 0
    for case in bar:
        _reset_peak()
        start = time.perf_counter()
        if haystack is None:
            tokens = _video_tokens(folder, case, model)
        else:
            tokens = splice(haystack, [_needle_tokens(model, path, needles) for path in case["images"]],
                            case["offsets"], case["frames"])
        if options.answer == "open":
            asked = [open_question(q, a) for q, a in zip(case["questions"], case["answers"])]
            expected = [text for _, text in asked]
            predictions = [ask_open(model, tokens, stem, schedule) for stem, _ in asked]
            correct = [p.strip().lower() == e.lower() for p, e in zip(predictions, expected)]
        else:
            expected = case["answers"]
            predictions = [ask(model, tokens, q, a, schedule) for q, a in zip(case["questions"], expected)]
            correct = [normalize_answer(p) == a.lower() for p, a in zip(predictions, expected)]
        record = {
            "case": case["case"], "kind": case["kind"], "frames": case["frames"], "depth": case["depth"],
            "needle": case["needle"], "answers": expected, "answer_mode": options.answer,
            "predictions": predictions,
            "correct": correct, "visual_tokens": int(tokens.shape[0]),
            "seconds": round(time.perf_counter() - start, 3), "peak_rss_mb": _peak_mb(),
            "model": model.model_id, "model_name": model.name, "dropout": options.dropout,
        }
        if torch.cuda.is_available():
            record["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        append_line(results, json.dumps(record))  # whole lines only: a kill never leaves a half result
        right, total = right + sum(correct), total + len(correct)
        bar.set_postfix(accuracy=f"{right / total:.1%}")
    return results


def splice(haystack: torch.Tensor, needles: Sequence[torch.Tensor], offsets: Sequence[int],
           frames: int) -> torch.Tensor:
    """The first `frames` frames of haystack tokens (16 a frame, repeated from the start when too short) with
    each needle's 64 tokens inserted before haystack frame `offsets[k]`."""
    per_clip = TOKENS_PER_FRAME * CLIP
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


@torch.inference_mode()
def ask(model: Hico, visual: torch.Tensor, question: str, answer: str, schedule: DropSchedule) -> str:
    """The decoded arg-max tokens at the answer's positions, the answer teacher-forced (official scoring)."""
    ids = tokenize(niah_prompt(question), model.tokenizer)
    embeds, span = model.model.embed(ids, visual)
    prefill = model.model.prefill(embeds, span, schedule)
    target = model.tokenizer(answer, add_special_tokens=False)["input_ids"]
    logits = [prefill.logits[0, -1]]
    if len(target) > 1:
        logits += list(model.model.decode(torch.tensor([target[:-1]]), prefill.cache)[0])
    return model.tokenizer.decode([int(row.argmax()) for row in logits])


@torch.inference_mode()
def ask_open(model: Hico, visual: torch.Tensor, question: str, schedule: DropSchedule) -> str:
    """The greedy answer (at most OPEN_MAX_TOKENS tokens) to a question asked without options."""
    ids = tokenize(niah_prompt(question), model.tokenizer)
    embeds, span = model.model.embed(ids, visual)
    prefill = model.model.prefill(embeds, span, schedule)
    stops, logits, tokens = model.stop_ids(), prefill.logits[0, -1], []
    for _ in range(OPEN_MAX_TOKENS):
        token = int(logits.argmax())
        if token in stops:
            break
        tokens.append(token)
        logits = model.model.decode(torch.tensor([[token]]), prefill.cache)[0, -1]
    return model.tokenizer.decode(tokens, skip_special_tokens=True)


def _haystack_tokens(folder: Path, settings: dict, model: Hico, progress: bool) -> torch.Tensor:
    from hico.video.reader import Video

    hay = settings["haystack"]
    path = Path(hay["path"])
    if not path.exists():
        raise OptionError(f"{path}: the haystack video of this benchmark is gone; restore it or rebuild")
    if file_digest(path) != hay["digest"]:
        raise OptionError(f"{path}: the haystack video changed since the benchmark was built; rebuild it")
    needed = max(settings["grid"]["frames"])
    count = needed if needed <= hay["unique_frames"] else hay["unique_frames"] // CLIP * CLIP
    if count < CLIP:
        raise OptionError(f"{path}: the haystack has fewer than {CLIP} frames; use a longer video")
    size = model.model.config.vision.image_size
    key = memory_key(hay["digest"], ("niah", hay["step"], count), size, model.tokens_id)
    cached = folder / "cache" / f"haystack-{key}.safetensors"
    memory = load_cached(cached, key)
    if memory is not None:
        return memory.tokens
    indices = tuple(haystack_indices(hay["step"], hay["unique_frames"], count))
    with Video(path) as video:
        plan = haystack_plan(video, indices)
        tokens = model.encode_plan(video, plan, progress=progress)
        memory = VideoMemory(tokens=tokens, indices=list(indices), times=video.times(plan), time_msg=plan.time_msg,
                             duration=plan.duration, source=str(path), key=key)
    cached.parent.mkdir(exist_ok=True)
    memory.save(cached)
    return tokens


def _needle_tokens(model: Hico, path: str, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    if path not in cache:
        cache[path] = model.encode_images([read_image(path)])[0]
    return cache[path]


def _video_tokens(folder: Path, case: dict, model: Hico) -> torch.Tensor:
    path = folder / case["video"]
    if not path.exists():
        raise OptionError(f"{path}: a case video is missing; rebuild the benchmark")
    sampling = SamplingOptions.plain(num_frames=case["total_frames"])
    return model.encode_video(path, sampling).tokens


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so each case reports its own peak; CUDA's peak too."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
