"""Perception Test validation, multiple choice (`perceptiontest_val_mc`). Format only: the official
repository ships no records for it, so `load` reads `PerceptionTest/mc_question_val/validation-*.parquet`
when the user has it (the dataset's own layout, config `mc_question_val`).

Prompt: "\\nQuestion: " + question + "\\n(A). o1\\n(B). o2\\n(C). o3" + "\\nOnly give the best option." (the
official labels stop at (C): a fourth option would be labelled "(C)." again). Official scoring: the first
standalone capital A-D is the option index; accuracy as a fraction. Strict: the stated letter.
"""

from __future__ import annotations

import re
from pathlib import Path

from hico.eval.choice import stated_letter
from hico.eval.task import AnnotationError, Item, Settings, Task, VideoRef, check_mode, read_parquet_records

FOLDER = "PerceptionTest/mc_question_val"
VIDEO_ROOT = "perception/videos/"
OFFICIAL_PREFIX = "pssd:s3://"
POST_PROMPT = "\nOnly give the best option."
LABELS = ("(A)", "(B)", "(C)")


def prompt(record: dict) -> str:
    lines = "".join(f"\n{LABELS[min(i, len(LABELS) - 1)]}. {o}" for i, o in enumerate(record["options"]))
    return f"\nQuestion: {record['question']}{lines}{POST_PROMPT}"


def option_index(response: str) -> int:
    found = re.search(r"\b([ABCD])\b", response)
    return "ABCD".index(found.group(1)) if found else -1


class PerceptionTest(Task):
    name = "perceptiontest_val_mc"
    benchmark = "PerceptionTest"
    settings = Settings(max_num_frames=512, max_new_tokens=1024, scale="fraction")

    def files(self) -> tuple[str, ...]:
        return (FOLDER,)

    def load(self, annotation_root: str | Path, **options) -> list[Item]:
        files = sorted((Path(annotation_root) / FOLDER).glob("validation-*.parquet"))
        if not files:
            raise AnnotationError(f"{Path(annotation_root) / FOLDER}: no validation-*.parquet file; the official "
                                  "repository has no Perception Test records, download the mc_question_val split")
        items = []
        for file in files:
            relative = file.relative_to(annotation_root).as_posix()
            for index, record in enumerate(read_parquet_records(annotation_root, relative)):
                answer = int(record["answer_id"])
                items.append(Item(task=self.name, source=(relative, index),
                                  video=VideoRef(f"{VIDEO_ROOT}{record['video_name']}.mp4"), prompt=prompt(record),
                                  target=answer, category=record.get("area") or "perception",
                                  options=tuple(record["options"]), answer_letter="ABCDEFGHIJ"[answer], doc=record))
        return items

    def score(self, item: Item, response: str, mode: str = "official", **options) -> dict:
        check_mode(mode)
        response = response.strip()
        if mode == "official":
            pred_id = option_index(response)
        else:
            letter = stated_letter(response, item.options)
            pred_id = "ABCDEFGHIJ".index(letter) if letter else -1
        correct = pred_id == item.target
        result = {"task": item.task, "category": item.category, "correct": correct,
                  "pred": "ABCDEFGHIJ"[pred_id] if pred_id >= 0 else "", "gt": item.answer_letter,
                  "answered": response != ""}
        if mode == "official":
            result["official"] = {"accuracy": {"video_name": item.doc["video_name"], "question": item.doc["question"],
                                               "pred_id": pred_id, "answer_id": item.target, "correct": int(correct)}}
        return result

    def aggregate(self, results: list[dict], mode: str = "official") -> dict:
        check_mode(mode)
        n = len(results)
        return {"overall": sum(r["correct"] for r in results) / n if n else 0.0, "count": n, "scale": "fraction",
                "per_category": {}}


def tasks() -> dict:
    return {"perceptiontest_val_mc": PerceptionTest()}
