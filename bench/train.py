"""Training on this machine: the learnable colour task (hico.synthetic.videos.write_colour_task), a tiny random
model, stage-2 preset with small-run overrides. Reports the loss curve, seconds per step, and whether the saved
checkpoint (official layout, loaded by hico.load) answers every video right.

  python bench/train.py
  python bench/train.py --steps 60 --lora
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import hico
from hico.synthetic import videos
from hico.synthetic.checkpoints import write_random_checkpoint
from hico.train.run import train
from hico.train.stages import load_stage
from hico.video import SamplingOptions

CACHE = Path(__file__).resolve().parent / ".cache" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lora", action="store_true", help="LoRA rank 8 on the LLM, projector trained fully")
    args = parser.parse_args()
    shutil.rmtree(CACHE, ignore_errors=True)
    data = videos.write_colour_task(CACHE / "task")
    write_random_checkpoint(CACHE / "tiny", seed=0)
    overrides = {"max_steps": args.steps, "batch_size": 4, "grad_accum": 1, "min_frames": 4, "max_frames": 8,
                 "warmup_ratio": 0.0, "logging_steps": 5, "save_steps": 1000, "lr": 2e-3, "vision_lr": 1e-3}
    if args.lora:
        overrides.update(train=["projector", "llm"], lora={"rank": 8, "alpha": 16, "dropout": 0.0})
    start = time.perf_counter()
    result = train(CACHE / "tiny", data, CACHE / "out", load_stage(2, overrides), progress=False)
    seconds = time.perf_counter() - start
    model = hico.load(CACHE / "out")
    sampling = SamplingOptions(policy="dynamic_fps1", max_num_frames=8, min_num_frames=4, local_num_frames=4)
    right = sum(model.chat(CACHE / "task" / f"{i}.mp4", videos.COLOUR_QUESTION, sampling) == name
                for i, name in zip(range(16), list(videos.COLOURS) * 4))
    curve = ", ".join(f"{step}: {loss:.2f}" for step, loss in result.losses)
    lines = [f"## Training a tiny model on CPU{' (LoRA)' if args.lora else ''}", "",
             f"Command: `python bench/train.py --steps {args.steps}{' --lora' if args.lora else ''}`. Machine: "
             f"{platform.machine()}, 2 CPU cores, no GPU, float32. Date: {date.today()}. Task: 16 generated "
             "2-second single-colour videos, \"What colour is the video?\" (4 answers). Model: tiny random "
             "checkpoint (`hico.synthetic.checkpoints`). Stage-2 preset (everything trained, tower at its own rate), batch 4, "
             f"{'LoRA rank 8 on the LLM' if args.lora else 'full fine-tuning'}.", "",
             "| steps | wall s (data checks, training, saving) | s per step | loss by step | answers right after reload |",
             "|---|---|---|---|---|",
             f"| {result.steps} | {seconds:.1f} | {seconds / result.steps:.2f} | {curve} | {right} / 16 |"]
    print("\n".join(lines))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ingest import write_doc

    write_doc("\n".join(lines) + "\n", "train-lora" if args.lora else "train")


if __name__ == "__main__":
    main()
