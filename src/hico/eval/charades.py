"""Charades-STA temporal grounding (`temporal_grounding_charades`): find the start and end of a sentence.

Prompt: the official instruction (typo "seonds" kept) + caption + ". " + "Please return its start time and
end time." (captions end with ".", so prompts hold ".."). Official scoring is the `eval_tvg.py` reading:
lower case, every "to" replaced by "-", the first "number - number" pair; else the first number of each
sentence (split on "!", "?", newline) that names a start/end/happen keyword, paired; else HH:MM:SS times the
same way; a reversed pair is swapped; no interval gives the dummy [end + 10, end + 20] (IoU 0). So "From 3.2
seconds to 10.5 seconds." and "starts at s seconds and ends at e seconds." both score 0, and
"00:00:03 - 00:00:10" reads as [0, 3]. Strict scoring reads the first two times of any format (seconds or
[HH:]MM:SS) as the interval and never invents one. Results: R@IoU 0.3/0.5/0.7 in percent, and mean IoU.
"""

from __future__ import annotations

import re
from pathlib import Path

from hico.eval.task import Item, Settings, Task, VideoRef, check_mode, read_json_records

FILE = "Temporal_Grounding/json/temporal_grounding_charades.json"
VIDEO_ROOT = "Charades/"
OFFICIAL_PREFIX = "your_data_dir/"
PRE_PROMPT = ("Please find the visual event described by a sentence in the video, determining its starting and "
              "ending times. The format should be: 'The event happens in the start time - end time'. For example, "
              "The event 'person turn a light on' happens in the 24.3 - 30.4 seonds. Now I will give you the "
              "textual sentence: ")
POST_PROMPT = "Please return its start time and end time."
KEYWORDS = ("starts", "ends", "happens in", "start time", "end time", "start", "end", "happen")
THRESHOLDS = (0.3, 0.5, 0.7)
_PAIR = re.compile(r"(\d+\.*\d*)\s*-\s*(\d+\.*\d*)")
_NUMBER = re.compile(r"\b(\d+\.\d+\b|\b\d+)\b")
_CLOCK = re.compile(r"\b(\d{1,2}:\d{2}:\d{2})\b")
_ANY_TIME = re.compile(r"(?<![\d.:])(?:(\d+):)?(\d+):(\d{2}(?:\.\d+)?)(?![\d:])|(?<![\d.:])(\d+(?:\.\d+)?)(?![\d:])")


def prompt(record: dict) -> str:
    return f"{PRE_PROMPT}{record['caption']}. {POST_PROMPT}"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _pairs(times: list[float]) -> list[list[float]]:
    times = times[: len(times) // 2 * 2]
    return [[times[i], times[i + 1]] for i in range(0, len(times), 2)]


def extract_official(response: str) -> list[list[float]]:
    """The intervals `eval_tvg.py` reads from a response (at most one)."""
    text = response.lower().replace("to", "-")
    sentences = re.split(r"[!?\n]", text)
    candidates = [s for s in sentences if any(k in s for k in KEYWORDS)]
    found = [[_number(a), _number(b)] for a, b in _PAIR.findall(text)]
    found = [pair for pair in found if None not in pair]  # "3..5" would crash eval_tvg.py; here it is no pair
    if not found:
        found = _pairs([float(m.group(0)) for m in map(_NUMBER.search, candidates) if m])
    if not found:
        clocks = [m.group(0) for m in map(_CLOCK.search, candidates) if m]
        found = _pairs([float(h * 3600 + m * 60 + s) for h, m, s in
                        ([int(x) for x in c.split(":")] for c in clocks)])
    return [[min(a, b), max(a, b)] for a, b in found][:1]


def extract_strict(response: str) -> list[float] | None:
    """The first two times of a response, in seconds ("12.5", "1:02", "00:01:02.5"), ordered; None if fewer."""
    times = []
    for hours, minutes, seconds, plain in _ANY_TIME.findall(response):
        if plain:
            times.append(float(plain))
        else:
            times.append(int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds))
    if len(times) < 2:
        return None
    return [min(times[:2]), max(times[:2])]


def iou(a: list[float], b: list[float]) -> float:
    """Overlap over the span from the earliest start to the latest end, as `eval_tvg.py` computes it."""
    span = max(a[1], b[1]) - min(a[0], b[0])
    return max(min(a[1], b[1]) - max(a[0], b[0]), 0) / span if span > 0 else 0.0


class Charades(Task):
    name = "temporal_grounding_charades"
    benchmark = "Charades-STA"
    settings = Settings(max_num_frames=512, max_new_tokens=50)

    def files(self) -> tuple[str, ...]:
        return (FILE,)

    def load(self, annotation_root: str | Path, **options) -> list[Item]:
        return [Item(task=self.name, source=(FILE, index), video=VideoRef(VIDEO_ROOT + record["video"]),
                     prompt=prompt(record), target=list(record["timestamp"]), category="charades", doc=record)
                for index, record in enumerate(read_json_records(annotation_root, FILE))]

    def score(self, item: Item, response: str, mode: str = "official", **options) -> dict:
        check_mode(mode)
        response = response.strip()
        truth = [float(t) for t in item.target]
        result = {"task": item.task, "category": item.category}
        if mode == "official":
            found = extract_official(response)
            dummy = len(found) != 1
            interval = [truth[1] + 10, truth[1] + 20] if dummy else found[0]
            key = f"{item.doc['video']}>>>{item.doc['caption']}>>>{item.doc['timestamp']}"
            result.update(interval=interval, parsed=not dummy, fallback_dummy_interval=dummy, extract_time=found,
                          official={"submission": {key: response}})
        else:
            interval = extract_strict(response)
            result.update(interval=interval, parsed=interval is not None)
        result["iou"] = iou(truth, interval) if interval is not None else 0.0
        return result

    def aggregate(self, results: list[dict], mode: str = "official") -> dict:
        check_mode(mode)
        n = len(results)
        recall = {f"R@{t}": (100 * sum(r["iou"] >= t for r in results) / n if n else 0.0) for t in THRESHOLDS}
        return {"overall": recall["R@0.5"], **recall, "mIoU": 100 * sum(r["iou"] for r in results) / n if n else 0.0,
                "count": n, "unparsed": sum(not r["parsed"] for r in results), "scale": "percent",
                "per_category": {}}


def tasks() -> dict:
    return {"temporal_grounding_charades": Charades()}
