"""LongVideoBench validation (`longvideobench_val_v`): long videos, questions that refer to subtitles.

Prompt (interleaved subtitles on, as the official task): " This video's subtitles are listed below: \\n" + the
subtitle lines shown while a frame is on screen + ".\\n Select the best answer ..." + question + "(X). option"
lines + "Answer with the option's letter from the given choices directly.\\n". Subtitles come from
`subtitles_dir/<subtitle_path>` (the official `subtitles/` folder); without it the prompt holds the official
empty subtitle list and every item carries a note, which the report states.

Official scoring is the MMMU-style parser ("(X)" anywhere, else "X ", else "X.", else the option texts for
answers over 5 words; the last of several hits) that falls back to `random.choice` when nothing is found:
hico seeds that choice (seed 0 per item, as the reference fixture was produced) and flags the items it
touched. Strict scoring takes the stated letter and never guesses. Accuracy is a fraction (0..1).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from hico.eval.choice import stated_letter
from hico.eval.task import AnnotationError, Item, Settings, Task, VideoRef, check_mode, read_parquet_records

FILE = "LongVideoBench/validation-00000-of-00001.parquet"
VIDEO_ROOT = "LongVideoBench/videos/"
OFFICIAL_PREFIX = "your_eval_data_dir/"
POST_PROMPT = "Answer with the option's letter from the given choices directly.\n"
HEADER = " This video's subtitles are listed below: \n"
INSTRUCTION = (".\n Select the best answer to the following multiple-choice question based on the video and the "
               "subtitles. Respond with only the letter of the correct option.\nQuestion: ")
COVERAGE_FRAMES = 512  # the official coverage test samples this many frame times, whatever the model reads
NO_SUBTITLES = "subtitles not given (--subtitles): the prompt has the official empty subtitle list"
SEED = 0


def frame_times(duration: float) -> list[float]:
    """Frame times (s) the official subtitle coverage test uses: whole seconds up to 512 s, else 512 spread."""
    if duration <= COVERAGE_FRAMES:
        return [float(t) for t in range(int(duration))]
    return [i * duration / COVERAGE_FRAMES for i in range(COVERAGE_FRAMES)]


def clock_seconds(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def shown_subtitles(subtitles: list[dict], duration: float, offset: float) -> list[str]:
    """The subtitle lines during which some frame is on screen (official rules: lines shorter than 1 s widened
    to 1 s around their middle, a non-float end is the video's end, times shifted by `offset`)."""
    times = frame_times(duration)
    kept = []
    for line in subtitles:
        if "timestamp" in line:
            start, end = line["timestamp"]
            if not isinstance(end, float):
                end = duration
            text = line["text"]
        else:
            start, end, text = clock_seconds(line["start"]), clock_seconds(line["end"]), line["line"]
        start, end = start - offset, end - offset
        if end - start < 1:
            middle = (start + end) / 2
            start, end = middle - 0.5, middle + 0.5
        if any(start < t < end for t in times):
            kept.append(text)
    return kept


def subtitle_file(folder: str | Path, name: str) -> Path:
    if not name.endswith("_en.json"):
        name = name.removesuffix(".json") + "_en.json"
    return Path(folder) / name


def options(record: dict) -> list[str]:
    found = []
    for i in range(5):
        option = record.get(f"option{i}")
        if option is None or option == "N/A":
            break
        found.append(option)
    return found


def prompt(record: dict, subtitles: list[str]) -> str:
    lines = "\n".join(f"({'ABCDE'[i]}). {o}" for i, o in enumerate(options(record)))
    return f"{HEADER}{chr(10).join(subtitles)}{INSTRUCTION}{record['question']}\n{lines}\n{POST_PROMPT}"


def parse_official(response: str, letters: str, texts: dict[str, str], seed: int = SEED) -> tuple[str, bool]:
    """The official MMMU-style reading; returns (letter, True when the seeded random fallback chose it)."""
    for mark in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(mark)
    response = f" {response} "
    bracketed = [c for c in letters if f"({c})" in response]
    candidates, by_text = bracketed, False
    if not candidates:
        candidates = [c for c in letters if f"{c} " in response]
    if not candidates:
        candidates = [c for c in letters if f"{c}." in response]
    if not candidates and len(response.split()) > 5:
        candidates = [c for c in letters if texts[c].lower() in response.lower()]
        by_text = bool(candidates)
    if not candidates:
        return random.Random(seed).choice(list(letters)), True
    if len(candidates) == 1:
        return candidates[0], False
    if by_text:
        positions = [response.lower().rfind(texts[c].lower()) for c in candidates]
    elif bracketed:
        positions = [response.rfind(f"({c})") for c in candidates]
    else:
        positions = [response.rfind(f" {c} ") for c in candidates]
    return candidates[positions.index(max(positions))], False


class LongVideoBench(Task):
    name = "longvideobench_val_v"
    benchmark = "LongVideoBench"
    settings = Settings(max_num_frames=512, max_new_tokens=32, scale="fraction")

    def files(self) -> tuple[str, ...]:
        return (FILE,)

    def load(self, annotation_root: str | Path, subtitles: str | Path | None = None, **options_) -> list[Item]:
        items = []
        for index, record in enumerate(read_parquet_records(annotation_root, FILE)):
            notes: tuple[str, ...] = ()
            lines: list[str] = []
            if subtitles is None:
                notes = (NO_SUBTITLES,)
            else:
                path = subtitle_file(subtitles, record["subtitle_path"])
                if not path.is_file():
                    notes = (f"subtitle file missing: {path.name}",)
                else:
                    try:
                        entries = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                        raise AnnotationError(f"{path}: not a readable subtitle JSON file ({exc})") from exc
                    lines = shown_subtitles(entries, record["duration"], record["starting_timestamp_for_subtitles"])
            texts = options(record)
            items.append(Item(task=self.name, source=(FILE, index), video=VideoRef(VIDEO_ROOT + record["video_path"]),
                              prompt=prompt(record, lines), target=record["correct_choice"],
                              category=record["question_category"], options=tuple(texts),
                              answer_letter="ABCDE"[record["correct_choice"]], doc=record, notes=notes))
        return items

    def score(self, item: Item, response: str, mode: str = "official", seed: int = SEED, **options_) -> dict:
        check_mode(mode)
        response = response.strip()
        letters = item.letters
        guessed = False
        if mode == "official":
            pred, guessed = parse_official(response, letters, dict(zip(letters, item.options)), seed)
        else:
            pred = stated_letter(response, item.options)
        result = {"task": item.task, "category": item.category, "duration_group": item.doc["duration_group"],
                  "correct": pred == item.answer_letter, "pred": pred or "", "gt": item.answer_letter,
                  "answered": response != "", "random_fallback": guessed}
        if mode == "official":
            video_id = item.doc["video_id"]
            result["official"] = {
                "lvb_acc": {"id": video_id, "duration_group": item.doc["duration_group"],
                            "question_category": item.doc["question_category"], "answer": item.answer_letter,
                            "parsed_pred": pred},
                "submission": {video_id: response}}
        return result

    def aggregate(self, results: list[dict], mode: str = "official") -> dict:
        check_mode(mode)
        groups: dict = defaultdict(list)
        for r in results:  # each result counts in its duration group and in its category, as officially
            groups[r["duration_group"]].append(r)
            groups[r["category"]].append(r)
        accuracy = {k: sum(r["correct"] for r in v) / len(v) for k, v in groups.items()}
        printable = {k: {"num": len(v), "acc": round(accuracy[k], 5)} for k, v in groups.items()}
        total = sum(len(v) for v in groups.values())
        overall = round(sum(accuracy[k] * len(v) for k, v in groups.items()) / total, 5) if total else 0
        printable["Overall"] = {"num": total, "acc": overall}
        return {"overall": overall, "count": len(results), "scale": "fraction",
                "per_category": {k: accuracy[k] for k in groups if isinstance(k, str)},
                "per_duration_group": {str(k): accuracy[k] for k in groups if not isinstance(k, str)},
                "random_fallbacks": sum(r.get("random_fallback", False) for r in results),
                "logged": str(printable)}


def tasks() -> dict:
    return {"longvideobench_val_v": LongVideoBench()}
