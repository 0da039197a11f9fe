"""What every benchmark task shares: the item it yields, its video reference, its settings, annotation reading.

A task reads the official annotation files (the `eval_annotations` folder of the official evaluation code,
in its own layout), builds each record's prompt exactly as the official task does, and scores a response
the official way (`mode="official"`, quirks included) or with the quirks fixed (`mode="strict"`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hico.errors import HicoError

MODES = ("official", "strict")
LETTERS = "ABCDEFGHIJ"


class AnnotationError(HicoError):
    """A missing or unreadable annotation file."""


class VideoRef(str):
    """A video path relative to the video root, with how to read it.

    A `str` (so it compares, prints and joins like the path it is) that also carries the record's clip
    bounds in seconds (`start`, `end`) and, for folders of pre-extracted frames, `frames=True` with the
    frame rate the official reader assumes for them (`folder_fps`).
    """

    start: float | None
    end: float | None
    frames: bool
    folder_fps: float

    def __new__(cls, path: str, *, start: float | None = None, end: float | None = None, frames: bool = False,
                folder_fps: float = 1.0) -> VideoRef:
        ref = super().__new__(cls, path)
        ref.start, ref.end, ref.frames, ref.folder_fps = start, end, frames, folder_fps
        return ref

    @property
    def path(self) -> str:
        return str.__str__(self)

    def settings(self) -> dict:
        """The reading settings besides the path, for results files."""
        out: dict[str, Any] = {}
        if self.start is not None:
            out["start"], out["end"] = self.start, self.end
        if self.frames:
            out["frames"], out["folder_fps"] = True, self.folder_fps
        return out


@dataclass(frozen=True)
class Item:
    """One question of a benchmark, ready to ask.

    `source` is (annotation file relative to the annotation root, record index in that file);
    `prompt` is the exact text the official pipeline passes to the model's chat (hico's chat prompt adds
    the system prompt, `<image>` and the time message as the official chat does).
    """

    task: str  # official (sub-)task name, e.g. "mvbench_action_sequence"
    source: tuple[str, int]
    video: VideoRef
    prompt: str
    target: Any
    category: str
    options: tuple[str, ...] = ()  # option texts of a multiple-choice question, in letter order
    answer_letter: str | None = None  # the letter the official scoring treats as right (None: no option is)
    doc: dict = field(default_factory=dict, compare=False, repr=False)  # the record as read
    notes: tuple[str, ...] = ()  # facts the report must state (e.g. subtitles missing)

    @property
    def id(self) -> str:
        return f"{self.task}/{self.source[1]}"

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]


@dataclass(frozen=True)
class Settings:
    """Official generation and sampling settings of a task (launch script + task YAML)."""

    max_num_frames: int = 512  # the launch script's MAX_NUM_FRAMES (640 for LVBench)
    max_new_tokens: int = 16
    scale: str = "percent"  # how the official aggregation reports: "percent" or "fraction"


class Task:
    """Base of every task. Subclasses set `name`, `benchmark`, `settings` and implement the three methods."""

    name: str = ""
    benchmark: str = ""
    settings: Settings = Settings()
    members: tuple[str, ...] = ()  # sub-task names for a group task, in the official order

    def load(self, annotation_root: str | Path, **options) -> list[Item]:
        raise NotImplementedError

    def score(self, item: Item, response: str, mode: str = "official", **options) -> dict:
        raise NotImplementedError

    def aggregate(self, results: list[dict], mode: str = "official") -> dict:
        raise NotImplementedError

    def files(self) -> tuple[str, ...]:
        """Annotation files this task reads, relative to the annotation root."""
        return ()

    def __repr__(self) -> str:
        return f"<hico.eval task {self.name}>"


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise HicoError(f"unknown scoring mode {mode!r}: use official or strict")


def annotation_file(root: str | Path, relative: str) -> Path:
    path = Path(root) / relative
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found; --annotations (or HICO_EVAL_ANNOTATIONS) must "
                              "point at the official eval_annotations folder (with MVBench/, MLVU_MC/, ...)")
    return path


def read_json_records(root: str | Path, relative: str) -> list[dict]:
    path = annotation_file(root, relative)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not a readable JSON annotation file ({exc})") from exc
    if not isinstance(records, list):
        raise AnnotationError(f"{path}: expected a JSON list of records")
    return records


def read_parquet_records(root: str | Path, relative: str) -> list[dict]:
    import pyarrow.parquet as pq

    path = annotation_file(root, relative)
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise AnnotationError(f"{path}: not a readable parquet annotation file ({exc})") from exc


class GroupTask(Task):
    """A group of sub-tasks (mvbench, mlvu_mc, lvbench): items of every member in the official order; the
    group score is the members' scores weighted by their sizes, as the official evaluator combines groups."""

    def __init__(self, name: str, benchmark: str, members: dict[str, Task]) -> None:
        self.name, self.benchmark = name, benchmark
        self.parts = members
        self.members = tuple(members)
        self.settings = next(iter(members.values())).settings

    def files(self) -> tuple[str, ...]:
        return tuple(f for task in self.parts.values() for f in task.files())

    def load(self, annotation_root: str | Path, **options) -> list[Item]:
        return [item for task in self.parts.values() for item in task.load(annotation_root, **options)]

    def score(self, item: Item, response: str, mode: str = "official", **options) -> dict:
        return self.parts[item.task].score(item, response, mode, **options)

    def aggregate(self, results: list[dict], mode: str = "official") -> dict:
        check_mode(mode)
        per_task = {}
        sizes = {}
        for name, task in self.parts.items():
            mine = [r for r in results if r["task"] == name]
            if mine:
                per_task[name] = task.aggregate(mine, mode)["overall"]
                sizes[name] = len(mine)
        overall = (sum(per_task[n] * sizes[n] for n in per_task) / sum(sizes.values())) if sizes else 0.0
        return {"overall": overall, "per_category": per_task, "count": sum(sizes.values()),
                "scale": self.settings.scale}
