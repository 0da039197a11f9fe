"""The shared runner: answer every item of some tasks with a hico model, resumably, on one or many processes.

    plan = prepare(["mvbench"], annotations, video_root, out)    # items + video check, no model work
    run(plan, model)                                              # results.jsonl, summary.json, report.md

- Results: one JSON line per item in `out/results.jsonl` (id, video, prompt hash, response, official and
  strict scores, seconds, peak memory); an item already there is skipped on a rerun.
- Videos: checked before any model work; missing or unreadable ones are an error naming the count and the
  first five, unless `skip_missing` records them as skipped (never scored, never dropped silently).
- Throughput: items are grouped by video so a video asked several questions (MLVU, Video-MME) is decoded and
  encoded once per run (memories are also shared between paths with the same content); a background thread
  decodes the next videos while the model works (a bounded queue of preprocessed clips).
- Scale-out: under `torchrun` (or `accelerate launch`) each rank takes every world-th video group, writes
  its own shard `results.rank<r>.jsonl`, and rank 0 merges the shards after a barrier.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import resource
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from tqdm import tqdm

from hico.api import ENCODE_BATCH_CLIPS, Hico
from hico.compress import DropSchedule
from hico.errors import HicoError, OptionError
from hico.eval import get_task
from hico.eval.report import summarize, write_report
from hico.eval.task import Item, Task
from hico.generate import GenerationOptions
from hico.memory import VideoMemory, file_digest, load_cached, memory_key
from hico.video.sampling import SamplingOptions

RESULTS = "results.jsonl"
SHARD = "results.rank{rank}.jsonl"
MISSING_SHOWN = 5
PREFETCH_BYTES = 1 << 30  # preprocessed clips held ahead of the model, at most
PREFETCH_NICE = 19  # decode workers take only the CPU the model leaves idle (bench/eval.py: 1.25x -> 1.09x)
BARRIER_TIMEOUT = timedelta(hours=12)  # rank 0 waits this long for the slowest rank


class MissingVideosError(HicoError):
    """Videos the items need are missing or unreadable."""


@dataclass(frozen=True)
class EvalOptions:
    """How to run. Sampling overrides default to the official per-benchmark settings (None = official)."""

    limit: int | None = None  # items per named task (the first N, in file order)
    skip_missing: bool = False
    num_frames: int | None = None  # --frames: exactly this many frames
    fps: float | None = None
    max_frames: int | None = None
    dropout: DropSchedule = DropSchedule()  # off, as in the official evaluation (mm_llm_compress False)
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
            raise OptionError("give either --frames or --fps, not both")
        if self.prefetch_bytes < 0:
            raise OptionError("the prefetch budget cannot be negative")
        if self.decoders < 1:
            raise OptionError(f"at least one decoder is needed, got {self.decoders}")

    def sampling(self, task: Task, item: Item) -> SamplingOptions:
        """The item's sampling: the official setting of its benchmark, or the overrides; clip bounds kept."""
        start, end = item.video.start, item.video.end
        if self.num_frames is None and self.fps is None and self.max_frames is None:
            return SamplingOptions(max_num_frames=task.settings.max_num_frames, start=start, end=end)
        return SamplingOptions.plain(num_frames=self.num_frames, fps=self.fps, max_frames=self.max_frames,
                                     start=start, end=end)

    def describe(self) -> dict:
        return {"frames": self.num_frames, "fps": self.fps, "max_frames": self.max_frames, "limit": self.limit,
                "dropout": None if not self.dropout.enabled else [self.dropout.kind, list(self.dropout.layers),
                                                                  list(self.dropout.ratios)],
                "subtitles": self.subtitles is not None, "seed": self.seed}

    def sentence(self) -> str:
        """The settings in words, for the report."""
        overrides = [f"{name} {value}" for name, value in (("frames", self.num_frames), ("fps", self.fps),
                                                           ("max frames", self.max_frames)) if value is not None]
        words = [f"sampling overridden: {', '.join(overrides)} (not the official setting)" if overrides
                 else "official sampling per benchmark"]
        words.append("in-LLM dropout off (as officially)" if not self.dropout.enabled else
                     f"in-LLM dropout {self.dropout.kind} after layers {list(self.dropout.layers)} "
                     f"keeping {list(self.dropout.ratios)} (the official evaluation has none)")
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

def read_results(path: Path) -> list[dict]:
    """Finished result lines; a last line cut off by an interrupted run is dropped (and trimmed)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        with open(path, "r+", encoding="utf-8") as handle:
            handle.truncate(len(complete.encode("utf-8")))
    results = []
    for number, line in enumerate(complete.splitlines(), 1):
        if line.strip():
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise HicoError(f"{path}: line {number} is not JSON ({exc}); fix or delete the line to go on") from exc
    return results


def finished(out: Path) -> dict[str, dict]:
    """Every result already written in `out` (merged file and any shards), by item id; an item skipped in
    one run and answered in a later one counts as answered."""
    done: dict[str, dict] = {}
    for path in [out / RESULTS, *sorted(out.glob("results.rank*.jsonl"))]:
        for result in read_results(path):
            if result["id"] not in done or done[result["id"]]["status"] != "ok":  # an answer beats a skip
                done[result["id"]] = result
    return done


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- distribution

@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's rank under torchrun / accelerate launch (both set RANK and WORLD_SIZE)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size())


def groups_of(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs grouped by video file and sampling, in order of first appearance."""
    grouped: dict[tuple, list[Job]] = OrderedDict()
    for job in jobs:
        grouped.setdefault((str(job.path), job.sampling, job.item.video.folder_fps), []).append(job)
    return list(grouped.values())


# ---------------------------------------------------------------- decoding ahead of the model

@dataclass
class Decoded:
    """What is known of a prefetched video once all its clips are out."""

    indices: list[int]
    times: list[float]
    time_msg: str
    duration: float


class Prefetcher:
    """Decodes the given video groups ahead of the model on `workers` background threads.

    Video g goes to thread g % workers, each with its own bounded queue of preprocessed clips, and the
    consumer reads the queues in video order: while the model works on video k, videos k+1..k+workers are
    being read. The queues together hold at most `budget` bytes of clips (at least one clip each), so
    memory stays bounded whatever the video lengths. With `isolate` the decoding itself runs in hico's
    decode worker processes, one per thread, kept from video to video (a crash or hang costs only that
    video: its process is replaced) and run at the lowest CPU priority, so decoding ahead never slows the
    model down; the threads mostly wait on them.
    """

    def __init__(self, groups: Sequence[list[Job]], size: int, clip_frames: int, budget: int,
                 isolate: bool = True, workers: int = 2) -> None:
        clip_bytes = clip_frames * 3 * size * size * 4
        workers = max(1, min(workers, len(groups) or 1))
        self.queues = [queue.Queue(maxsize=max(1, budget // clip_bytes // workers)) for _ in range(workers)]
        self.size, self.clip_frames, self.isolate = size, clip_frames, isolate
        self.stop = threading.Event()
        self.served = 0
        groups = list(groups)
        self.threads = [threading.Thread(target=self._produce, args=(groups[w::workers], self.queues[w]),
                                         daemon=True) for w in range(workers)]
        for thread in self.threads:
            thread.start()

    def _put(self, box: queue.Queue, entry) -> bool:
        while not self.stop.is_set():
            try:
                box.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, groups: list[list[Job]], box: queue.Queue) -> None:
        from hico.video.worker import WorkerClient

        worker = WorkerClient(nice=PREFETCH_NICE) if self.isolate else None  # for all this thread's videos
        try:
            self._decode_all(groups, box, worker)
        finally:
            if worker is not None:
                worker.close()

    def _decode_all(self, groups: list[list[Job]], box: queue.Queue, worker) -> None:
        from hico.video.reader import Video

        for group in groups:
            job = group[0]
            try:
                if not self._put(box, ("start", file_digest(job.path))):
                    return
                with Video(job.path, folder_fps=job.item.video.folder_fps, isolate=self.isolate,
                           worker=worker) as video:
                    plan = video.plan(job.sampling)
                    for clip in video.clips(plan, self.size, self.clip_frames):
                        if not self._put(box, ("clip", clip.pixels)):
                            return
                    info = Decoded(list(plan.indices), video.times(plan), plan.time_msg, plan.duration)
                if not self._put(box, ("done", info)):
                    return
            except Exception as exc:  # handed to the consumer, which records this video's items as unreadable
                if not isinstance(exc, HicoError):
                    exc = HicoError(f"{job.path}: could not be read ({type(exc).__name__}: {exc})")
                if not self._put(box, ("error", exc)):
                    return

    def next_video(self) -> Iterator[tuple[str, object]]:
        """The entries of the next video: ("start", content digest), ("clip", pixels)*, then ("done", Decoded);
        ("error", exc) ends it early."""
        box = self.queues[self.served % len(self.queues)]
        self.served += 1
        while True:
            kind, value = box.get()
            yield kind, value
            if kind in ("done", "error"):
                return

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


class MemoryCache:
    """Encoded videos of this run by content + sampling + model, the most recent few kept in memory."""

    def __init__(self, keep: int = 4, folder: str | None = None) -> None:
        self.keep, self.folder = keep, Path(folder) if folder else None
        self.memories: OrderedDict[str, VideoMemory] = OrderedDict()

    def get(self, key: str) -> VideoMemory | None:
        if key in self.memories:
            self.memories.move_to_end(key)
            return self.memories[key]
        if self.folder is not None:  # a damaged or foreign entry is warned about and encoded again
            return load_cached(self.folder / f"{key}.safetensors", key)
        return None

    def put(self, key: str, memory: VideoMemory) -> None:
        self.memories[key] = memory
        while len(self.memories) > self.keep:
            self.memories.popitem(last=False)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            memory.save(self.folder / f"{key}.safetensors")


def encode_entries(model: Hico, entries: Iterator[tuple[str, object]], job: Job,
                   cache: MemoryCache) -> tuple[VideoMemory, bool]:
    """Encode one prefetched video's clips, or take its memory from the cache when a video with the same
    content and sampling was encoded before (its clips are then drained unused); returns (memory, reused)."""
    chunks, batch = [], []
    key, cached = "", None
    for kind, value in entries:
        if kind == "error":
            raise value
        if kind == "start":
            key = memory_key(value, job.sampling, model.model.config.vision.image_size, model.tokens_id)
            cached = cache.get(key)
        elif kind == "clip" and cached is None:
            batch.append(value)
            if len(batch) == ENCODE_BATCH_CLIPS:
                chunks.append(model.model.encode_clips(torch.stack(batch)).flatten(0, 1))
                batch = []
        elif kind == "done":
            if cached is not None:
                return cached, True
            if batch:
                chunks.append(model.model.encode_clips(torch.stack(batch)).flatten(0, 1))
            memory = VideoMemory(tokens=torch.cat(chunks), indices=value.indices, times=value.times,
                                 time_msg=value.time_msg, duration=value.duration, source=str(job.path), key=key)
            cache.put(key, memory)
            return memory, False
    raise HicoError(f"{job.path}: the decoder stopped before the end of the video")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the process's peak


# ---------------------------------------------------------------- the run

def skipped_result(job: Job) -> dict:
    return {"id": job.item.id, "task": job.item.task, "source": list(job.item.source), "video": job.item.video.path,
            "prompt_sha": prompt_hash(job.item.prompt), "status": "skipped", "reason": job.missing}


def answer_job(model: Hico, job: Job, memory: VideoMemory, options: EvalOptions, seconds_shared: float) -> dict:
    """Answer one item and score it both ways."""
    started = time.perf_counter()
    generation = GenerationOptions(max_new_tokens=job.task.settings.max_new_tokens)
    response = model.answer(memory, job.item.prompt, options=generation, dropout=options.dropout)
    scores = {mode: job.task.score(job.item, response, mode, seed=options.seed) for mode in ("official", "strict")}
    return {"id": job.item.id, "task": job.item.task, "source": list(job.item.source), "video": job.item.video.path,
            "prompt_sha": prompt_hash(job.item.prompt), "status": "ok", "response": response, "score": scores,
            "frames": memory.num_frames, "seconds": round(time.perf_counter() - started + seconds_shared, 4),
            "peak_memory_mb": round(peak_memory_mb(next(model.model.parameters()).device), 1),
            "model": model.model_id}


def run(plan: Plan, model: Hico, *, place: World | None = None) -> dict | None:
    """Answer what the results do not hold yet, then (rank 0) merge, summarise and report.

    Returns the summary on rank 0 (None on other ranks)."""
    if model.tokenizer is None:
        raise HicoError("the model folder has no tokenizer files; evaluation needs one to read the prompts")
    place = place or world()
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    done = finished(out)
    if place.distributed:  # every rank must split the same to-do list: nobody writes before all have read
        import torch.distributed as dist

        dist.barrier()
    others = {r.get("model") for r in done.values() if r.get("status") == "ok"} - {model.model_id}
    if others:
        raise OptionError(f"{out} holds results of another model; pass a new --out folder for this one")
    answered = {i for i, r in done.items() if r["status"] == "ok"}
    todo = [j for j in plan.jobs if j.item.id not in answered]  # skipped items are tried again
    mine = [job for g, group in enumerate(groups_of(todo)) if g % place.size == place.rank for job in group]
    path = out / (SHARD.format(rank=place.rank) if place.distributed else RESULTS)
    _answer(model, mine, plan.options, path, place)
    if place.distributed:
        import torch.distributed as dist

        dist.barrier()
    if place.rank != 0:
        return None
    merged = merge(out, plan)
    summary = summarize(plan, merged, model.name)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    write_report(summary, out / "report.md")
    return summary


def _answer(model: Hico, jobs: list[Job], options: EvalOptions, path: Path, place: World) -> None:
    skipped = [j for j in jobs if j.missing]
    live = [j for j in jobs if not j.missing]
    groups = groups_of(live)
    config = model.model.config
    bar = tqdm(total=len(jobs), desc=f"eval rank {place.rank}" if place.distributed else "eval", unit="item",
               disable=not options.progress, position=place.rank, dynamic_ncols=True)
    prefetcher = Prefetcher(groups, config.vision.image_size, config.local_num_frames, options.prefetch_bytes,
                            options.isolate, options.decoders)
    cache = MemoryCache(folder=options.cache_dir)
    try:
        with open(path, "a", encoding="utf-8") as results, bar, torch.inference_mode():
            for job in skipped:
                results.write(json.dumps(skipped_result(job)) + "\n")
                bar.update(1)
            results.flush()
            for group in groups:
                started = time.perf_counter()
                entries = prefetcher.next_video()
                try:
                    memory, _ = encode_entries(model, entries, group[0], cache)
                except HicoError as exc:  # a video that fails to decode: its items are recorded, not lost
                    for _ in entries:  # what is left of its clips, so the next video starts at its own
                        pass
                    for job in group:
                        job.missing = f"unreadable: {exc}"
                        results.write(json.dumps(skipped_result(job)) + "\n")
                        bar.update(1)
                    results.flush()
                    continue
                shared = (time.perf_counter() - started) / len(group)  # the encoding, shared by its questions
                for job in group:
                    results.write(json.dumps(answer_job(model, job, memory, options, shared)) + "\n")
                    results.flush()
                    bar.update(1)
    finally:
        prefetcher.close()


def merge(out: Path, plan: Plan) -> list[dict]:
    """Write every result (merged file + shards) into results.jsonl in item order; remove the shards."""
    done = finished(out)
    order = {job.item.id: i for i, job in enumerate(plan.jobs)}
    merged = sorted(done.values(), key=lambda r: (order.get(r["id"], len(order)), r["id"]))
    tmp = out / (RESULTS + ".partial")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in merged), encoding="utf-8")
    tmp.replace(out / RESULTS)
    for shard in out.glob("results.rank*.jsonl"):
        shard.unlink()
    return [r for r in merged if r["id"] in order]
