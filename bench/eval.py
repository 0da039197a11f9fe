"""Evaluation throughput: a synthetic 200-item benchmark in the MVBench format, answered by the embedded model.

Measures, on the same items and videos:
  model-only   encode + answer every item from clips decoded beforehand (no decoding in the timed part)
               (the model gets all cores but one in every timing: `--threads`)
  decode-only  decoding and preprocessing every video alone, in one kept decode worker process (the runner's
               default: one per decode thread, reused from video to video) and in this process
               (`--decode-in-process`)
  wall, 1 proc `hico.eval.runner.run`, both decode modes: decoding on background threads while the model works
  wall, 2 proc the default (worker) decoding under `torchrun --standalone --nproc_per_node 2` (items split by video),
               start-up (two interpreters, two model loads) included
The issue's target: wall (1 process) <= 1.15 x model-only, i.e. decoding hidden behind compute. Model-only,
worker and in-process runs are interleaved `--repeats` times and the best of each kind is reported.

  python bench/eval.py                     # 200 items, prints the figures and a docs/benchmarks.md line
  python bench/eval.py --items 40 --work build/bench-eval-small
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = """
import sys, hico
from hico.embedded import embedded_path
from hico.eval.runner import EvalOptions, prepare, run
options = EvalOptions(progress=False, isolate=sys.argv[5] == "worker")
plan = prepare([sys.argv[1]], sys.argv[2], sys.argv[3], sys.argv[4], options)
run(plan, hico.load(embedded_path()))
"""


def decoded_videos(model, plan, isolate: bool, keep: bool = True) -> tuple[list, float]:
    """Every video group's clips and sampling facts, decoded up front (kept if `keep`); and the seconds."""
    from hico.clips import FRAMES_PER_CLIP
    from hico.eval.runner import groups_of
    from hico.store import VideoStore
    from hico.video.reader import Video
    from hico.video.worker import WorkerClient

    size = VideoStore(model).image_size
    worker = WorkerClient() if isolate else None
    videos, started = [], time.perf_counter()
    for group in groups_of(plan.jobs):
        job = group[0]
        with Video(job.path, folder_fps=job.item.video.folder_fps, isolate=isolate, worker=worker) as video:
            sample_plan = video.plan(job.sampling)
            clips = [c.pixels for c in video.clips(sample_plan, size, FRAMES_PER_CLIP)]
            if keep:
                videos.append((group, sample_plan, video.times(sample_plan), clips))
    if worker is not None:
        worker.close()
    return videos, time.perf_counter() - started


def model_only(model, videos: list, dropout) -> float:
    """Seconds to encode and answer every item from clips decoded beforehand, with the runner's dropout
    schedule (off by default, as in the official evaluation; the model's own default may differ)."""
    import torch

    from hico.generate import GenerationOptions
    from hico.memory import VideoMemory
    from hico.store import ENCODE_BATCH_CLIPS

    started = time.perf_counter()
    with torch.inference_mode():
        for group, sample_plan, times, clips in videos:
            tokens = torch.cat([model.encode_clip_batch(clips[i:i + ENCODE_BATCH_CLIPS])
                                for i in range(0, len(clips), ENCODE_BATCH_CLIPS)])
            memory = VideoMemory(tokens, list(sample_plan.indices), times, sample_plan.time_msg, sample_plan.duration,
                                 str(group[0].path), "")
            for job in group:
                options = GenerationOptions(max_new_tokens=job.task.settings.max_new_tokens)
                model.answer(memory, job.item.prompt, options=options, dropout=dropout)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=16, help="length of each synthetic video")
    parser.add_argument("--size", type=int, default=160, help="frame width and height of the videos, pixels")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench-eval"))
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads for the model in both timings (default: all cores but one, which "
                             "the decoding needs to run beside the model)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timings of each kind, interleaved; the best of each is reported")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    import hico
    from hico.embedded import embedded_path
    from hico.eval.runner import EvalOptions, prepare, run
    from hico.synthetic.benchmarks import write_benchmark

    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    bench = write_benchmark(work, "mvbench", items=args.items, seconds=args.seconds, fps=8.0, size=args.size)
    model = hico.load(embedded_path())
    figures: dict = {"items": args.items, "videos": len(bench.video_files)}
    plan = prepare([bench.task], bench.annotations, bench.videos, work / "probe", EvalOptions(progress=False))
    videos, figures["decode_only_thread_s"] = decoded_videos(model, plan, isolate=False)
    figures["decode_only_worker_s"] = decoded_videos(model, plan, isolate=True, keep=False)[1]
    runs: dict[str, list[float]] = {"model_only": [], "worker": [], "thread": []}
    for repeat in range(args.repeats):  # interleaved, so a noisy neighbour hurts every kind alike
        runs["model_only"].append(model_only(model, videos, EvalOptions().dropout))
        for mode, isolate in (("worker", True), ("thread", False)):
            options = EvalOptions(progress=False, isolate=isolate)
            out = work / f"one-{mode}-{repeat}"
            plan = prepare([bench.task], bench.annotations, bench.videos, out, options)
            started = time.perf_counter()
            run(plan, model)
            runs[mode].append(time.perf_counter() - started)
    del videos
    figures["model_only_s"] = compute = min(runs["model_only"])
    for mode in ("worker", "thread"):
        wall = min(runs[mode])
        figures[f"wall_1proc_{mode}_s"] = wall
        figures[f"wall_over_model_only_{mode}"] = round(wall / compute, 3)
        figures[f"items_per_s_1proc_{mode}"] = round(args.items / wall, 2)
    figures["runs_s"] = {kind: [round(t, 1) for t in times] for kind, times in runs.items()}

    paths = (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(write_job(work)), bench.task, str(bench.annotations), str(bench.videos), str(work / "two"),
                    "worker"],
                   env=env, check=True)  # timed with its start-up: two interpreters and two model loads
    wall_two = time.perf_counter() - started
    same = json.loads((work / "one-worker-0" / "summary.json").read_text())["tasks"] == \
        json.loads((work / "two" / "summary.json").read_text())["tasks"]

    frames = json.loads((work / "one-worker-0" / "results.jsonl").read_text().splitlines()[0])["frames"]
    figures.update({"frames_per_video": frames, "video": f"{args.size}x{args.size}, {args.seconds} s at 8 fps",
                    "wall_2proc_worker_s": wall_two, "items_per_s_2proc_worker": round(args.items / wall_two, 2),
                    "2proc_summary_equals_1proc": same, "torch_threads": args.threads, "cpus": os.cpu_count(),
                    "load_avg": [round(x, 1) for x in os.getloadavg()],
                    "machine": platform.processor() or platform.machine()})
    print(json.dumps({k: round(v, 3 if "over" in k else 1) if isinstance(v, float) else v
                      for k, v in figures.items()}, indent=1))


def write_job(work: Path) -> Path:
    path = work / "job.py"
    path.write_text(JOB)
    return path


if __name__ == "__main__":
    main()
