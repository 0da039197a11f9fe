"""The eval protocol: answer every item of some tasks with a hico engine, resumably, on one or many processes.

    plan = prepare(["mvbench"], annotations, video_root, out)    # items + video check, no model work
    run(plan, model)                                              # results.jsonl, summary.json, report.md

- Results: one JSON line per item in `out/results.jsonl` (id, video, prompt hash, response, official and
  strict scores, seconds, peak memory), appended whole (`hico.records`); an item already there is skipped on
  a rerun.
- Videos: checked before any model work; missing or unreadable ones are an error naming the count and the
  first five, unless `skip_missing` records them as skipped (never scored, never dropped silently).
- The engine does the rest: a `VideoStore` decodes the next videos ahead of the model (`prefetch`, in video
  order) and encodes each video once per run (memories are shared between paths with the same content, and
  kept on disk with `cache_dir`, whose videos are then never decoded again); each video's questions go to
  `generate_many` together, one `Request` per item, so its prefilled prefix serves them all.
- Scale-out: under `torchrun` (or `accelerate launch`) each rank takes every world-th video group, writes
  its own shard `results.rank<r>.jsonl`, and rank 0 merges the shards after a barrier.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from hico import records
from hico.api import Hico
from hico.atomic import write_text_atomic
from hico.dropout import DropSchedule
from hico.engine import Completion, Request
from hico.errors import HicoError, OptionError
from hico.eval import get_task
from hico.eval.report import summarize, write_report
from hico.eval.task import Item, Task
from hico.generate import GenerationConfig
from hico.store import PREFETCH_BYTES, Stored, VideoStore, Wanted
from hico.video.sampling import SamplingOptions

RESULTS = "results.jsonl"
SHARD = "results.rank{rank}.jsonl"
MISSING_SHOWN = 5


class MissingVideosError(HicoError):
    """Videos the items need are missing or unreadable."""


@dataclass(frozen=True)
class EvalOptions:
    """How to run. Sampling overrides default to the official per-benchmark settings (None = official)."""

    limit: int | None = None  # items per named task (the first N, in file order)
    skip_missing: bool = False
    num_frames: int | None = None  # --num-frames (formerly --frames): exactly this many frames
    fps: float | None = None
    max_frames: int | None = None
    # off, as in the official evaluation (mm_llm_compress False); any `DropSchedule.parse` setting: "default"
    # and "model" stand for the checkpoint's schedules, which `run` resolves with the model
    dropout: DropSchedule | str = DropSchedule()
    subtitles: str | None = None  # LongVideoBench subtitles/ or Video-MME .srt folder
    prefetch_bytes: int = PREFETCH_BYTES
    cache_dir: str | None = None  # keep encoded videos on disk across runs
    seed: int = 0  # LongVideoBench's official random fallback
    progress: bool = True
    isolate: bool = True  # decode in hico's worker process (a hung or crashing decoder cannot stop the run)
    decoders: int = 2  # videos decoded at once ahead of the model

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise OptionError(f"--limit must be at least 1 item, got {self.limit}")
        if self.num_frames is not None and self.fps is not None:
            raise OptionError("give either --num-frames or --fps, not both")
        if self.prefetch_bytes < 0:
            raise OptionError("the prefetch budget cannot be negative")
        if self.decoders < 1:
            raise OptionError(f"at least one decoder is needed, got {self.decoders}")
        object.__setattr__(self, "dropout", DropSchedule.parse(self.dropout))

    def sampling(self, task: Task, item: Item) -> SamplingOptions:
        """The item's sampling: the official setting of its benchmark, or the overrides; clip bounds kept."""
        start, end = item.video.start, item.video.end
        if self.num_frames is None and self.fps is None and self.max_frames is None:
            return SamplingOptions(max_num_frames=task.settings.max_num_frames, start=start, end=end)
        return SamplingOptions.plain(num_frames=self.num_frames, fps=self.fps, max_frames=self.max_frames,
                                     start=start, end=end)

    def describe(self) -> dict:
        """The settings as summary.json holds them (dropout: None when off, else [kind, layers, ratios])."""
        dropout = self.dropout
        if isinstance(dropout, DropSchedule):
            dropout = [dropout.kind, list(dropout.layers), list(dropout.ratios)] if dropout.enabled else None
        return {"frames": self.num_frames, "fps": self.fps, "max_frames": self.max_frames, "limit": self.limit,
                "dropout": dropout, "subtitles": self.subtitles is not None, "seed": self.seed}

    def sentence(self) -> str:
        """The settings in words, for the report."""
        overrides = [f"{name} {value}" for name, value in (("frames", self.num_frames), ("fps", self.fps),
                                                           ("max frames", self.max_frames)) if value is not None]
        words = [f"sampling overridden: {', '.join(overrides)} (not the official setting)" if overrides
                 else "official sampling per benchmark"]
        dropout = self.dropout
        if isinstance(dropout, str):  # not resolved with a model yet
            words.append(f"in-LLM dropout {dropout!r} (the official evaluation has none)")
        else:
            words.append("in-LLM dropout off (as officially)" if not dropout.enabled else
                         f"in-LLM dropout {dropout.kind} after layers {list(dropout.layers)} "
                         f"keeping {list(dropout.ratios)} (the official evaluation has none)")
        if self.limit is not None:
            words.append(f"first {self.limit} items of each task only")
        words.append("subtitles from --subtitles" if self.subtitles else "no subtitle folder given")
        return "; ".join(words)


@dataclass
class Job:
    """One item with its resolved video file and sampling."""

    item: Item
    task: Task  # the task that scores it (the group or the named task)
    path: Path
    sampling: SamplingOptions
    missing: str = ""  # why the video cannot be read, if it cannot


@dataclass
class Plan:
    names: list[str]
    jobs: list[Job]
    out: Path
    options: EvalOptions
    video_root: Path
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def missing(self) -> list[Job]:
        return [j for j in self.jobs if j.missing]


def video_problem(path: Path, frames: bool) -> str:
    """Why a video cannot be read ("" if it can), checked without decoding."""
    if frames:
        if not path.is_dir():
            return "frame folder missing"
        if not os.access(path, os.R_OK | os.X_OK):
            return "frame folder not readable"
        return "" if any(p.is_file() for p in path.iterdir()) else "frame folder empty"
    if not path.is_file():
        return "missing"
    if not os.access(path, os.R_OK):
        return "not readable"
    return "" if path.stat().st_size > 0 else "empty file"


def prepare(names: Sequence[str], annotations: str | Path, video_root: str | Path, out: str | Path,
            options: EvalOptions = EvalOptions()) -> Plan:
    """Load the tasks' items, resolve and check their videos. Raises MissingVideosError (unless
    `options.skip_missing`) before any model work."""
    if not names:
        raise OptionError("name at least one task (hico eval --list prints them)")
    root = Path(video_root)
    if not root.is_dir():
        raise OptionError(f"{root}: the video root is not a folder")
    jobs, seen, notes = [], set(), {}
    for name in names:
        task = get_task(name)
        items = task.load(annotations, subtitles=options.subtitles)
        if options.limit is not None:
            items = items[: options.limit]
        notes[name] = sorted({note for item in items for note in item.notes})
        for item in items:
            if item.id in seen:
                continue
            seen.add(item.id)
            resolve = getattr(task, "resolve", None)
            path = resolve(item, root) if resolve else root / item.video.path
            jobs.append(Job(item, task, path, options.sampling(task, item), video_problem(path, item.video.frames)))
    plan = Plan(list(names), jobs, Path(out), options, root, notes)
    missing = plan.missing
    if missing and not options.skip_missing:
        shown = ", ".join(f"{j.path} ({j.missing})" for j in missing[:MISSING_SHOWN])
        raise MissingVideosError(f"{len(missing)} of {len(jobs)} items have a missing or unreadable video under "
                                 f"{root}, first {min(len(missing), MISSING_SHOWN)}: {shown}; fix --video-root or "
                                 "pass --skip-missing to record them as skipped")
    return plan


# ---------------------------------------------------------------- results files

def finished(out: Path) -> dict[str, dict]:
    """Every result already written in `out` (merged file and any shards), by item id; an item skipped in
    one run and answered in a later one counts as answered. A line cut off by an interrupted run is dropped."""
    done: dict[str, dict] = {}
    for path in [out / RESULTS, *sorted(out.glob("results.rank*.jsonl"))]:
        for result in records.read_records(path):
            if result["id"] not in done or done[result["id"]]["status"] != "ok":  # an answer beats a skip
                done[result["id"]] = result
    return done


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def groups_of(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs grouped by video file and sampling, in order of first appearance."""
    grouped: dict[tuple, list[Job]] = OrderedDict()
    for job in jobs:
        grouped.setdefault((str(job.path), job.sampling, job.item.video.folder_fps), []).append(job)
    return list(grouped.values())


def wanted(job: Job) -> Wanted:
    """What the store decodes ahead for a job's video: the same path, sampling and reader options as
    `VideoStore.get` is asked for in `answer_group`."""
    return Wanted(str(job.path), job.sampling, (("folder_fps", job.item.video.folder_fps),))


def peak_memory_mb() -> float:
    """The GPU peak of this process where it uses CUDA (on its current device), else its peak RSS, in MiB."""
    cuda = records.Peak.cuda_mb()
    return cuda if cuda is not None else records.Peak.rss_mb()


# ---------------------------------------------------------------- the run

def skipped_result(job: Job, reason: str) -> dict:
    return {"id": job.item.id, "task": job.item.task, "source": list(job.item.source), "video": job.item.video.path,
            "prompt_sha": prompt_hash(job.item.prompt), "status": "skipped", "reason": reason}


def request(job: Job, stored: Stored, options: EvalOptions) -> Request:
    """One item as an engine request: the official prompt and token budget, greedy, the run's dropout."""
    config = GenerationConfig(max_new_tokens=job.task.settings.max_new_tokens)
    return Request(stored.memory, job.item.prompt, config=config, dropout=options.dropout, tag=job,
                   prefix_dir=options.cache_dir)


def answered_result(done: Completion, memory_seconds: float, options: EvalOptions, model_id: str) -> dict:
    """An answered item scored both ways; `seconds` is its answer plus its share of its video's decoding
    and encoding (`memory_seconds`)."""
    job: Job = done.request.tag
    response = done.answer.text
    scores = {mode: job.task.score(job.item, response, mode, seed=options.seed) for mode in ("official", "strict")}
    return {"id": job.item.id, "task": job.item.task, "source": list(job.item.source), "video": job.item.video.path,
            "prompt_sha": prompt_hash(job.item.prompt), "status": "ok", "response": response, "score": scores,
            "frames": done.request.video.num_frames, "seconds": round(done.seconds + memory_seconds, 4),
            "peak_memory_mb": round(peak_memory_mb(), 1), "model": model_id}


def answer_group(engine: Hico, store: VideoStore, group: list[Job], options: EvalOptions) -> Iterator[dict]:
    """The results of one video's items, as they are answered: its memory from the store (decoded and
    encoded once, or cached), its questions through `engine.generate_many`. A video that cannot be decoded
    gives every item of it a skipped result with the reason; an error while answering stops the run, as an
    answer cannot be recorded without hiding it."""
    first = group[0]
    try:
        stored = store.get(first.path, first.sampling, folder_fps=first.item.video.folder_fps)
    except HicoError as exc:  # a video that fails to decode: its items are recorded, not lost
        for job in group:
            yield skipped_result(job, f"unreadable: {exc}")
        return
    share = stored.seconds / len(group)  # the decoding and encoding, shared by the video's questions
    for done in engine.generate_many(request(job, stored, options) for job in group):
        if not done.ok:
            raise done.error
        yield answered_result(done, share, options, engine.model_id)


def run(plan: Plan, model: Hico, *, place: records.Place | None = None) -> dict | None:
    """Answer what the results do not hold yet, then (rank 0) merge, summarise and report.

    Returns the summary on rank 0 (None on other ranks)."""
    if model.tokenizer is None:
        raise HicoError("the model folder has no tokenizer files; evaluation needs one to read the prompts")
    plan = replace(plan, options=replace(plan.options, dropout=model.schedule(plan.options.dropout)))
    place = place or records.place()
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    done = finished(out)
    place.barrier()  # every rank must split the same to-do list: nobody writes before all have read
    others = {r.get("model") for r in done.values() if r.get("status") == "ok"} - {model.model_id}
    if others:
        raise OptionError(f"{out} holds results of another model; pass a new --out folder for this one")
    answered = {i for i, r in done.items() if r["status"] == "ok"}
    todo = [j for j in plan.jobs if j.item.id not in answered]  # skipped items are tried again
    mine = [job for g, group in enumerate(groups_of(todo)) if g % place.size == place.rank for job in group]
    path = out / (SHARD.format(rank=place.rank) if place.distributed else RESULTS)
    _answer(model, mine, plan.options, path, place)
    place.barrier()
    if not place.main:
        return None
    merged = merge(out, plan)
    summary = summarize(plan, merged, model.name)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    write_report(summary, out / "report.md")
    return summary


def _answer(model: Hico, jobs: list[Job], options: EvalOptions, path: Path, place: records.Place) -> None:
    groups = groups_of([j for j in jobs if not j.missing])
    bar = tqdm(total=len(jobs), desc=f"eval rank {place.rank}" if place.distributed else "eval", unit="item",
               disable=not options.progress, position=place.rank, dynamic_ncols=True)
    with bar, VideoStore(model, cache_dir=options.cache_dir, isolate=options.isolate) as store:
        for job in jobs:
            if job.missing:
                records.append_record(path, skipped_result(job, job.missing))
                bar.update(1)
        # decoded ahead in the order asked for below; a video whose tokens are cached is never decoded
        store.prefetch([wanted(group[0]) for group in groups], workers=options.decoders, budget=options.prefetch_bytes)
        answered = answer_batched(model, store, groups, options) if getattr(model, "batched", False) else \
            (result for group in groups for result in answer_group(model, store, group, options))
        for result in answered:
            records.append_record(path, result)
            bar.update(1)


def answer_batched(engine, store: VideoStore, groups: list[list[Job]], options: EvalOptions) -> Iterator[dict]:
    """`answer_group` for an engine that answers many requests at once (vLLM): every item's request goes to
    one `generate_many` call, the videos' memories read from the store as the engine asks for them. Results
    come in item order; an unreadable video's items are skipped with the reason, as in `answer_group`."""
    skipped: dict[int, list[dict]] = {}
    shares: dict[int, float] = {}

    def requests() -> Iterator[Request]:
        for index, group in enumerate(groups):
            first = group[0]
            try:
                stored = store.get(first.path, first.sampling, folder_fps=first.item.video.folder_fps)
            except HicoError as exc:
                skipped[index] = [skipped_result(job, f"unreadable: {exc}") for job in group]
                continue
            shares[index] = stored.seconds / len(group)
            for job in group:
                yield replace(request(job, stored, options), tag=(index, job))

    for done in engine.generate_many(requests()):
        index, job = done.request.tag
        for earlier in sorted(i for i in skipped if i < index):
            yield from skipped.pop(earlier)
        if not done.ok:
            raise done.error
        yield answered_result(replace(done, request=replace(done.request, tag=job)), shares[index], options,
                              engine.model_id)
    for index in sorted(skipped):
        yield from skipped.pop(index)


def merge(out: Path, plan: Plan) -> list[dict]:
    """Write every result (merged file + shards) into results.jsonl in item order; remove the shards."""
    done = finished(out)
    order = {job.item.id: i for i, job in enumerate(plan.jobs)}
    merged = sorted(done.values(), key=lambda r: (order.get(r["id"], len(order)), r["id"]))
    write_text_atomic(out / RESULTS, "".join(json.dumps(r) + "\n" for r in merged))
    for shard in out.glob("results.rank*.jsonl"):
        shard.unlink()
    return [r for r in merged if r["id"] in order]
