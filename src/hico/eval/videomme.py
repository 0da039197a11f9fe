"""Video-MME (`videomme`, `videomme_w_subtitle`): 900 videos x 3 questions, short/medium/long.

Prompts as the official tasks build them; with subtitles, `subtitles_dir/<videoID>.srt` is read and only the
text inside the first `<font color="white" size=".72c">` tag of each line is kept (untagged lines are
dropped); without the file the prompt is the official one for a missing `.srt` (an empty subtitle block and
the frames-only sentence) and the item carries a note. Official scoring: a few answer prefixes are removed,
then the first capital A-D anywhere is the prediction ("Answer: C" reads as A; lower case reads as nothing;
two prefixes are never removed because the official list concatenates them by accident). Strict scoring
takes the stated letter. Accuracy in percent; the breakdowns are computed as the official aggregation logs
them (a name counts every item whose "duration_domain_sub-category_task-type" key contains it).
"""

from __future__ import annotations

import re
from pathlib import Path

from hico.eval.choice import stated_letter
from hico.eval.task import Item, Settings, Task, VideoRef, check_mode, read_parquet_records

FILE = "Video-MME/videomme/test-00000-of-00001.parquet"
VIDEO_ROOT = "VideoMME_0629/videos/"
OFFICIAL_PREFIX = "your_eval_data_dir/"
EXTENSIONS = (".mp4", ".MP4", ".mkv")  # tried in this order, as the official task does
FRAMES_ONLY = ("These are the frames of a video. Select the best answer to the following multiple-choice question "
               "based on the video. Respond with only the letter (A, B, C, or D) of the correct option.")
WITH_SUBTITLES = ("These are the frames and subtitles of a video. Select the best answer to the following "
                  "multiple-choice question based on the video and the subtitles. Respond with only the letter "
                  "(A, B, C, or D) of the correct option.")
SUBTITLE_HEADER = "This video's subtitles are listed below: \n"
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
SUBTITLE_POST_PROMPT = "\nThe best answer is:"
# The official prefix list: two pairs lack a comma between them, so they are single (never matching) strings.
ANSWER_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                   "The best option isThe correct option is", "Best answer:Best option:")
_FONT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')
NO_SRT = "subtitle file missing: the prompt has the official empty subtitle block"

VIDEO_TYPES = ("short", "medium", "long")
CATEGORIES = ("Knowledge", "Film & Television", "Sports Competition", "Artistic Performance", "Life Record",
              "Multilingual")
SUB_CATEGORIES = (
    "Humanity & History", "Literature & Art", "Biology & Medicine", "Finance & Commerce", "Astronomy", "Geography",
    "Law", "Life Tip", "Technology", "Animation", "Movie & TV Show", "Documentary", "News Report", "Esports",
    "Basketball", "Football", "Athletics", "Other Sports", "Stage Play", "Magic Show", "Variety Show", "Acrobatics",
    "Handicraft", "Food", "Fashion", "Daily Life", "Travel", "Pet & Animal", "Exercise", "Multilingual")
TASK_CATEGORIES = (
    "Temporal Perception", "Spatial Perception", "Attribute Perception", "Action Recognition", "Object Recognition",
    "OCR Problems", "Counting Problem", "Temporal Reasoning", "Spatial Reasoning", "Action Reasoning",
    "Object Reasoning", "Information Synopsis")


def srt_lines(text: str) -> list[str]:
    """The subtitle texts of an .srt file as the official task keeps them."""
    return [m.group(1) for m in map(_FONT.search, text.splitlines()) if m]


def prompt(record: dict) -> str:
    options = "\n".join(record["options"])
    return f"{FRAMES_ONLY}\nQuestion: {record['question']}\nOption:\n{options}{POST_PROMPT}"


def subtitle_prompt(record: dict, lines: list[str] | None) -> str:
    """`lines` None: no .srt file (the official prompt then has an empty subtitle block)."""
    head = "" if lines is None else SUBTITLE_HEADER + "\n".join(lines)
    sentence = FRAMES_ONLY if lines is None else WITH_SUBTITLES
    options = "\n".join(record["options"])
    return f"{head}\n{sentence}\nQuestion: {record['question']}\nOption:\n{options}{SUBTITLE_POST_PROMPT}"


def first_capital(response: str) -> str:
    """The official reading: prefixes removed, then the first capital A-D anywhere ("" if none, or if a
    response of more than 10 words has none)."""
    text = response.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    found = re.search(r"[ABCD]", text)
    return found.group(0) if found else ""


class VideoMME(Task):
    benchmark = "Video-MME"
    settings = Settings(max_num_frames=512, max_new_tokens=16)

    def __init__(self, subtitles: bool) -> None:
        self.with_subtitles = subtitles
        self.name = "videomme_w_subtitle" if subtitles else "videomme"

    def files(self) -> tuple[str, ...]:
        return (FILE,)

    def load(self, annotation_root: str | Path, subtitles: str | Path | None = None, **options) -> list[Item]:
        items = []
        for index, record in enumerate(read_parquet_records(annotation_root, FILE)):
            notes: tuple[str, ...] = ()
            text = prompt(record)
            if self.with_subtitles:
                srt = Path(subtitles) / f"{record['videoID']}.srt" if subtitles is not None else None
                lines = srt_lines(srt.read_text(encoding="utf-8", errors="replace")) if srt and srt.is_file() else None
                notes = (NO_SRT,) if lines is None else ()
                text = subtitle_prompt(record, lines)
            video = VideoRef(f"{VIDEO_ROOT}{record['videoID']}.mp4")
            items.append(Item(task=self.name, source=(FILE, index), video=video, prompt=text,
                              target=record["answer"], category=record["duration"],
                              options=tuple(o[3:] if o[1:3] == ". " else o for o in record["options"]),
                              answer_letter=record["answer"], doc=record, notes=notes))
        return items

    def resolve(self, item: Item, video_root: str | Path) -> Path:
        """The video file: .mp4, else .MP4, else .mkv, whichever exists (the .mp4 path when none does)."""
        base = Path(video_root) / item.video.path.removesuffix(".mp4")
        for extension in EXTENSIONS:
            if base.with_name(base.name + extension).exists():
                return base.with_name(base.name + extension)
        return base.with_name(base.name + ".mp4")

    def score(self, item: Item, response: str, mode: str = "official", **options) -> dict:
        check_mode(mode)
        response = response.strip()
        pred = first_capital(response) if mode == "official" else (stated_letter(response, item.options) or "")
        doc = item.doc
        result = {"task": item.task, "category": item.category, "correct": pred == item.answer_letter, "pred": pred,
                  "gt": item.answer_letter, "answered": response != "",
                  "key": f"{doc['duration']}_{doc['domain']}_{doc['sub_category']}_{doc['task_type']}"}
        if mode == "official":
            result["official"] = {"videomme_percetion_score": {
                "question_id": doc["question_id"], "duration": doc["duration"], "category": doc["domain"],
                "sub_category": doc["sub_category"], "task_category": doc["task_type"], "pred_answer": pred,
                "answer": item.answer_letter}}
        return result

    def aggregate(self, results: list[dict], mode: str = "official") -> dict:
        check_mode(mode)

        def percent(name: str | None) -> float:
            chosen = [r for r in results if name is None or name in r["key"]]
            return 100 * sum(r["correct"] for r in chosen) / len(chosen) if chosen else 0

        logged = []
        for title, names in (("video Type", VIDEO_TYPES), ("Categories", CATEGORIES),
                             ("Video Sub Categories", SUB_CATEGORIES), ("Task Categories", TASK_CATEGORIES)):
            logged += [f"Evaluation on {title}: {name}: {percent(name) : .1f}%" for name in names]
        overall = percent(None)
        logged.append(f"Overall Performance: {overall : .1f}%")
        seen = lambda names: [n for n in names if any(n in r["key"] for r in results)]  # noqa: E731
        return {"overall": overall, "count": len(results), "scale": "percent",
                "per_category": {name: percent(name) for name in seen(VIDEO_TYPES)},
                "per_task_type": {name: percent(name) for name in seen(TASK_CATEGORIES)}, "logged": logged}


def tasks() -> dict:
    return {"videomme": VideoMME(False), "videomme_w_subtitle": VideoMME(True)}
