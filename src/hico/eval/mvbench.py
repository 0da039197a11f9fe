"""MVBench: 20 sub-tasks of 200 questions on short clips (`MVBench/json/<sub_task>.json`).

Prompt: "Question: " + question + "\\nOption:\\n" + "(X) option\\n" lines + "\\nOnly give the best option.";
scored by `mcq_acc` (hico.eval.choice). Videos: the official roots with their placeholder prefix removed,
under the video root (e.g. `star/Charades_v1_480/ZS9XR.mp4`); episodic_reasoning reads TVQA frame folders
(3 fps, as the official frame reader assumes for paths containing "tvqa"); clip tasks pass start/end.
"""

from __future__ import annotations

from hico.eval.choice import ChoiceTask, answer_letter, option_lines
from hico.eval.task import GroupTask, Item, Settings, VideoRef

POST_PROMPT = "\nOnly give the best option."
SETTINGS = Settings(max_num_frames=512, max_new_tokens=16)
TVQA_FPS = 3.0

# sub-task -> folder under the video root (the official placeholder root without "your_data_dir/"; the
# Moments in Time root is an s3 URL in the official code, its bucket path is kept).
ROOTS = {
    "action_sequence": "star/Charades_v1_480/",
    "moving_count": "clevrer/video_validation/",
    "action_prediction": "star/Charades_v1_480/",
    "episodic_reasoning": "tvqa/frames_fps3_hq/",
    "action_antonym": "ssv2-video/",
    "action_count": "perception/videos/",
    "scene_transition": "scene-qa/video/",
    "object_shuffle": "perception/videos/",
    "object_existence": "clevrer/video_validation/",
    "fine_grained_pose": "nturgbd/",
    "unexpected_action": "funqa-test/test/",
    "moving_direction": "clevrer/video_validation/",
    "state_change": "perception/videos/",
    "object_interaction": "star/Charades_v1_480/",
    "character_order": "perception/videos/",
    "action_localization": "sta/sta_video/",
    "counterfactual_inference": "clevrer/video_validation/",
    "fine_grained_action": "Moments_in_Time_Raw/videos/",
    "moving_attribute": "clevrer/video_validation/",
    "egocentric_navigation": "vlnqa/",
}  # in the official group order
FRAME_FOLDERS = {"episodic_reasoning"}
# The official placeholders in front of the roots above (for comparing with the official paths).
OFFICIAL_PREFIX = {"fine_grained_action": "p2hdd:s3://"}
DEFAULT_PREFIX = "your_data_dir/"


def prompt(record: dict) -> str:
    return f"Question: {record['question']}\nOption:\n{option_lines(record['candidates'])}{POST_PROMPT}"


def video(sub_task: str, record: dict) -> VideoRef:
    path = ROOTS[sub_task] + record["video"]
    frames = sub_task in FRAME_FOLDERS
    fps = TVQA_FPS if "tvqa" in path else 1.0
    if "start" in record:
        return VideoRef(path, start=record["start"], end=record["end"], frames=frames, folder_fps=fps)
    return VideoRef(path, frames=frames, folder_fps=fps)


def sub_task(name: str) -> ChoiceTask:
    file = f"MVBench/json/{name}.json"

    def build(record: dict, index: int) -> Item:
        return Item(task=f"mvbench_{name}", source=(file, index), video=video(name, record), prompt=prompt(record),
                    target=record["answer"], category=name, options=tuple(record["candidates"]),
                    answer_letter=answer_letter(record["candidates"], record["answer"]), doc=record)

    return ChoiceTask(f"mvbench_{name}", "MVBench", file, "mvbench_accuracy", SETTINGS, build)


def tasks() -> dict:
    members = {f"mvbench_{name}": sub_task(name) for name in ROOTS}
    return {"mvbench": GroupTask("mvbench", "MVBench", members), **members}
