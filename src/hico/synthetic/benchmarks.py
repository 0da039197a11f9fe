"""Mini benchmarks in the official annotation formats over synthetic videos, for tests and bench/eval.py.

`write_benchmark(folder, "mvbench", items=8)` writes `folder/annotations/<official layout>` and
`folder/videos/<the paths the task expects>`, and returns what to run. Videos are short synthetic clips
whose frames carry their index (hico.synthetic.videos); several items share a video where the real benchmark does (MLVU, Video-MME).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hico.synthetic.videos import write_frame_folder, write_video

FORMATS = ("mvbench", "mlvu", "lvbench", "longvideobench", "videomme", "charades")
COLOURS = ("red", "green", "blue", "yellow")
TASKS = {  # format -> (task to run, annotation file)
    "mvbench": ("mvbench_action_sequence", "MVBench/json/action_sequence.json"),
    "mlvu": ("mlvu_mc_count", "MLVU_MC/json/4_count.json"),
    "lvbench": ("lvbench_cartoon", "LVBench/json/lvbench_clean_cartoon.json"),
    "longvideobench": ("longvideobench_val_v", "LongVideoBench/validation-00000-of-00001.parquet"),
    "videomme": ("videomme", "Video-MME/videomme/test-00000-of-00001.parquet"),
    "charades": ("temporal_grounding_charades", "Temporal_Grounding/json/temporal_grounding_charades.json"),
}


@dataclass(frozen=True)
class MiniBenchmark:
    task: str  # the task name to run
    annotations: Path
    videos: Path
    video_files: tuple[Path, ...]  # every video file or frame folder written, in item order


def _question(i: int) -> tuple[str, list[str], str]:
    options = [COLOURS[(i + k) % 4] for k in range(4)]
    return f"Which colour is item {i}?", options, options[i % 4]


def _record(fmt: str, i: int, v: int, seconds: int) -> tuple[dict, str]:
    """One record of format `fmt` for item i on video v, and the video's path under the video root."""
    question, options, answer = _question(i)
    letter = "ABCD"[options.index(answer)]
    if fmt == "mvbench":
        return ({"video": f"clip{v}.mp4", "question": question, "candidates": options, "answer": answer,
                 "start": 0.5, "end": seconds - 1.0}, f"star/Charades_v1_480/clip{v}.mp4")
    if fmt == "mlvu":
        return ({"video": f"count_{v}.mp4", "duration": float(seconds), "question": question, "candidates": options,
                 "answer": answer, "question_type": "count"}, f"MVLU/MLVU/video/4_count/count_{v}.mp4")
    if fmt == "lvbench":
        return ({"video": f"{v:08d}", "type": "cartoon", "question": question,
                 "candidates": [f"({'ABCD'[k]}) {o}" for k, o in enumerate(options)], "answer": f"({letter}) {answer}",
                 "question_type": ["count"], "time_reference": "00:01-00:02"}, f"LVBench/frames/{v:08d}")
    if fmt == "longvideobench":
        record = {"video_id": f"lvb{v}", "id": f"lvb{v}_{i}", "video_path": f"lvb{v}.mp4",
                  "subtitle_path": f"lvb{v}_en.json", "correct_choice": options.index(answer), "question": question,
                  "duration": float(seconds), "duration_group": 15, "question_category": "TOS",
                  "topic_category": "NP-News-Programs", "starting_timestamp_for_subtitles": 0.0}
        record.update({f"option{k}": (options[k] if k < 4 else "N/A") for k in range(5)})
        return record, f"LongVideoBench/videos/lvb{v}.mp4"
    if fmt == "videomme":
        extension = ".mkv" if v % 2 else ".mp4"  # the official task falls back to .mkv when no .mp4 exists
        return ({"video_id": f"{v:03d}", "duration": "short", "domain": "Knowledge",
                 "sub_category": "Humanity & History", "url": "", "videoID": f"vid{v}", "question_id": f"{v:03d}-{i}",
                 "task_type": "Counting Problem", "question": question,
                 "options": [f"{'ABCD'[k]}. {o}" for k, o in enumerate(options)], "answer": letter},
                f"VideoMME_0629/videos/vid{v}{extension}")
    return ({"video": f"CH{v}.mp4", "caption": f"person does thing {i}.", "timestamp": [1.0, float(seconds - 2)]},
            f"Charades/CH{v}.mp4")


def write_benchmark(folder: str | Path, fmt: str, items: int = 8, *, seconds: int = 8, fps: float = 4.0,
                    size: int = 64, per_video: int | None = None) -> MiniBenchmark:
    """A mini benchmark of `items` questions; `per_video` questions share a video (default 2 for MLVU and
    Video-MME, which ask several questions per video, else 1). Videos last `seconds` at `fps`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    folder = Path(folder)
    annotations, videos = folder / "annotations", folder / "videos"
    share = per_video or (2 if fmt in ("mlvu", "videomme") else 1)
    records, written = [], []
    for i in range(items):
        record, relative = _record(fmt, i, i // share, seconds)
        records.append(record)
        path = videos / relative
        if path in written:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "lvbench":
            write_frame_folder(path, seconds + len(written), width=size, height=size)
        else:  # one frame more per video, so that no two videos have the same content
            write_video(path, int(seconds * fps) + len(written), fps=fps, width=size, height=size,
                        gop=max(1, int(fps * 2)))
        written.append(path)
    task, relative = TASKS[fmt]
    target = annotations / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if relative.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(records), target)
    else:
        target.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return MiniBenchmark(task, annotations, videos, tuple(written))
