"""MLVU multiple choice: 7 sub-tasks, several questions per long video (`MLVU_MC/json/<n>_<task>.json`).

Prompt: "Question:" (no space) + question + "\\nOption:\\n" + "(X) option\\n" lines + "Answer with the option's
letter from the given choices directly."; scored by `mcq_acc`. Two 2_needle records (34, 338) name an answer
that is not among their options: the official scoring can never count them right, and neither does hico.
Videos: `MVLU/MLVU/video/<n>_<task>/<video>` under the video root ("MVLU" as in the official placeholder).
"""

from __future__ import annotations

from hico.eval.choice import ChoiceTask, answer_letter, option_lines
from hico.eval.task import GroupTask, Item, Settings, VideoRef

POST_PROMPT = "Answer with the option's letter from the given choices directly."
SETTINGS = Settings(max_num_frames=512, max_new_tokens=16)
VIDEO_ROOT = "MVLU/MLVU/video/"
OFFICIAL_PREFIX = "your_eval_data_dir/"
# task suffix -> annotation file stem, in the official group order
FILES = {
    "count": "4_count",
    "ego": "3_ego",
    "needle": "2_needle",
    "order": "5_order",
    "plotqa": "1_plotQA",
    "anomaly_reco": "6_anomaly_reco",
    "topic_reasoning": "7_topic_reasoning",
}


def prompt(record: dict) -> str:
    return f"Question:{record['question']}\nOption:\n{option_lines(record['candidates'])}{POST_PROMPT}"


def sub_task(name: str, stem: str) -> ChoiceTask:
    file = f"MLVU_MC/json/{stem}.json"

    def build(record: dict, index: int) -> Item:
        return Item(task=f"mlvu_mc_{name}", source=(file, index),
                    video=VideoRef(f"{VIDEO_ROOT}{stem}/{record['video']}"), prompt=prompt(record),
                    target=record["answer"], category=name, options=tuple(record["candidates"]),
                    answer_letter=answer_letter(record["candidates"], record["answer"]), doc=record)

    return ChoiceTask(f"mlvu_mc_{name}", "MLVU", file, "mlvu_mc_accuracy", SETTINGS, build)


def tasks() -> dict:
    members = {f"mlvu_mc_{name}": sub_task(name, stem) for name, stem in FILES.items()}
    return {"mlvu_mc": GroupTask("mlvu_mc", "MLVU", members), **members}
