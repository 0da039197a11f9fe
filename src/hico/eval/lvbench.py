"""LVBench: hour-long videos in 6 types (`LVBench/json/lvbench_clean_<type>.json`), read as frame folders.

Prompt: question + "\\n" + "X. " + candidate + "\\n" per option (candidates already start with "(X) ", so the
official prompt shows "A. (A) 1636") + "Answer with the option's letter from the given choices directly.";
scored by `mcq_acc` against the letter of the answer's position. Videos: `LVBench/frames/<id>` under the
video root, folders of pre-extracted frames read at 1 fps as the official frame reader does (so the time
message's "duration" is the frame count). The group runs the six per-type files, not lvbench_clean.json.
"""

from __future__ import annotations

from hico.eval.choice import ChoiceTask, answer_letter
from hico.eval.task import GroupTask, Item, Settings, VideoRef

POST_PROMPT = "Answer with the option's letter from the given choices directly."
SETTINGS = Settings(max_num_frames=640, max_new_tokens=16)
VIDEO_ROOT = "LVBench/frames/"
OFFICIAL_PREFIX = "your_eval_data_dir/"
TYPES = ("cartoon", "documentary", "live", "selfmedia", "sport", "tv")  # the official group order


def prompt(record: dict) -> str:
    options = "".join(f"{'ABCDEFGHIJ'[i]}. {c}\n" for i, c in enumerate(record["candidates"]))
    return f"{record['question']}\n{options}{POST_PROMPT}"


def sub_task(kind: str) -> ChoiceTask:
    file = f"LVBench/json/lvbench_clean_{kind}.json"

    def build(record: dict, index: int) -> Item:
        return Item(task=f"lvbench_{kind}", source=(file, index),
                    video=VideoRef(VIDEO_ROOT + record["video"], frames=True, folder_fps=1.0),
                    prompt=prompt(record), target=record["answer"], category=kind,
                    options=tuple(record["candidates"]),
                    answer_letter=answer_letter(record["candidates"], record["answer"]), doc=record)

    return ChoiceTask(f"lvbench_{kind}", "LVBench", file, "lvbench_mc_accuracy", SETTINGS, build)


def tasks() -> dict:
    members = {f"lvbench_{kind}": sub_task(kind) for kind in TYPES}
    return {"lvbench": GroupTask("lvbench", "LVBench", members), **members}
