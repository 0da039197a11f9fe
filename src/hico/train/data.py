"""Training data: LLaVA-style conversation files and YAML mixtures in the official stage format.

A conversation record (JSON list or JSONL, one record a line):

    {"video": "clips/a.mp4", "start": 3.0, "end": 9.5,            # or "image": "pics/b.jpg", or neither
     "conversations": [{"from": "human", "value": "<image>\\nWhat happens?"}, {"from": "gpt", "value": "..."}]}

A mixture (the official `data/stage*.yaml` layout):

    datasets:
      - json_path: captions.json
        data_root: videos/                 # media paths in the records start here
        sampling_strategy: first:25%       # all | first:N | first:N% | end:N | end:N% | random:N | random:N%
        video_read_type: decord            # kept for reference; hico reads every file with PyAV

Relative `json_path` and `data_root` values start at the YAML file's folder. N% takes ceil(N% x records) as
the official loader does; `random` draws with a seed, so a run is reproducible (the official shuffle is not).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from hico.errors import OptionError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
IMAGE = "<image>"
_STRATEGY = re.compile(r"^(all|first|end|random)(?::(\d+)(%?))?$")


@dataclass(frozen=True)
class Sample:
    turns: tuple[tuple[str, str], ...]  # (role "user" | "assistant", text), starting with the user
    video: str | None = None  # absolute path
    image: str | None = None
    start: float | None = None  # seconds
    end: float | None = None
    source: str = ""  # "file.json#index", for messages about this sample


@dataclass(frozen=True)
class DatasetSpec:
    json_path: str
    data_root: str
    sampling_strategy: str = "all"
    video_read_type: str = "pyav"


def load_conversations(path: str | Path, data_root: str | Path | None = None) -> list[Sample]:
    """Every record of a conversation file, validated; problems name the file and the record."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{path}: no such conversation file (the --data JSON or JSONL, or a mixture's json_path)")
    root = Path(data_root) if data_root is not None else path.parent
    text = path.read_text(encoding="utf-8")
    try:
        records = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else json.loads(text)
    except json.JSONDecodeError as exc:
        raise OptionError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list):
        raise OptionError(f"{path}: expected a list of conversation records")
    return [_sample(record, f"{path.name}#{n}", root) for n, record in enumerate(records)]


def _sample(record: object, where: str, root: Path) -> Sample:
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        raise OptionError(f"{where}: a record needs a 'conversations' list of {{from, value}} turns")
    turns = []
    for turn in record["conversations"]:
        role = ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise OptionError(f"{where}: every turn needs 'from' (human or gpt) and a text 'value', got {turn!r}")
        turns.append((role, turn["value"]))
    if not turns or turns[0][0] != "user" or any(a[0] == b[0] for a, b in zip(turns, turns[1:])):
        raise OptionError(f"{where}: turns must alternate human, gpt, human, ... starting with human")
    if turns[-1][0] != "assistant":
        raise OptionError(f"{where}: the last turn is a question with no answer to learn from")
    media = {k: str((root / record[k]).resolve()) for k in ("video", "image") if record.get(k)}
    if len(media) > 1:
        raise OptionError(f"{where}: a record has either a video or an image, not both")
    placeholders = sum(text.count(IMAGE) for _, text in turns)
    if placeholders != (1 if media else 0):
        raise OptionError(f"{where}: found {placeholders} {IMAGE} placeholders; a record with a video or image "
                          f"holds exactly one, a text-only record none")
    start, end = record.get("start"), record.get("end")
    if start is not None and end is not None and not float(start) < float(end):
        raise OptionError(f"{where}: start ({start}) must be before end ({end})")
    return Sample(tuple(turns), media.get("video"), media.get("image"),
                  None if start is None else float(start), None if end is None else float(end), where)


def select(samples: list[Sample], strategy: str, seed: int = 0) -> list[Sample]:
    """Apply an official sampling strategy: all, first:N, first:N%, end:N, end:N%, random:N, random:N%."""
    match = _STRATEGY.match(strategy.strip())
    if not match or (match.group(1) != "all" and match.group(2) is None):
        raise OptionError(f"unknown sampling_strategy {strategy!r}: use all, first:N, first:N%, end:N%, or "
                          "random:N% (N a whole number)")
    kind, number, percent = match.groups()
    if kind == "all":
        return list(samples)
    count = math.ceil(int(number) * len(samples) / 100) if percent else int(number)
    if percent and int(number) > 100:
        raise OptionError(f"sampling_strategy {strategy!r}: a share above 100% makes no sense")
    count = min(count, len(samples))
    if kind == "first":
        return samples[:count]
    if kind == "end":
        return samples[len(samples) - count:]
    chosen = list(samples)
    random.Random(seed).shuffle(chosen)
    return chosen[:count]


def load_mixture(path: str | Path, seed: int = 0) -> list[Sample]:
    """All samples of a mixture YAML, each dataset cut by its sampling strategy, in file order."""
    return [s for spec in read_mixture(path) for s in select(load_conversations(spec.json_path, spec.data_root),
                                                              spec.sampling_strategy, seed)]


def read_mixture(path: str | Path) -> list[DatasetSpec]:
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{path}: no such data mixture file; pass a YAML with a 'datasets' list")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise OptionError(f"{path}: not valid YAML ({exc})") from exc
    entries = content.get("datasets") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise OptionError(f"{path}: expected a 'datasets' list of entries with json_path (and data_root)")
    specs = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "json_path" not in entry:
            raise OptionError(f"{path}: dataset {n} has no json_path")
        unknown = set(entry) - {"json_path", "data_root", "sampling_strategy", "video_read_type"}
        if unknown:
            raise OptionError(f"{path}: dataset {n} has unknown fields {sorted(unknown)}")
        json_path = path.parent / entry["json_path"]
        root = path.parent / entry["data_root"] if entry.get("data_root") else json_path.parent
        strategy = str(entry.get("sampling_strategy", "all"))
        select([], strategy)  # a bad strategy fails here, before any data is read
        specs.append(DatasetSpec(str(json_path), str(root), strategy, str(entry.get("video_read_type", "pyav"))))
    return specs
