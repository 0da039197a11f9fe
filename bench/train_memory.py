"""Per-process peak memory of distributed training strategies on a reduced-depth, real-width model: 2 processes
(torchrun, gloo, CPU), stage 3 training the LLM and the projector (tower frozen), a few steps.

Model (random weights): Qwen2.5-1.5B's LLM width (hidden 1536, 12 heads, 2 KV heads, MLP 8960, vocabulary 151,936,
tied embeddings) with 2 decoder layers, and UMT-L's tower width (1024, 16 heads, 224 input) with 2 blocks. Data: the
colour task's 16 two-second videos (hico.synthetic.videos), batch 1 per process. Each process reports its peak
resident set size (getrusage ru_maxrss: the largest it ever was) before the first step (every process loads the
whole model, then the strategy wraps or shards it), when training ends, and after the final save (which gathers
the whole model on process 0); and its resident set when training ends (what the strategy keeps between steps;
memory freed but not returned to the system by the allocator still counts).

  python bench/train_memory.py                              # ddp and fsdp
  python bench/train_memory.py --strategies ddp fsdp zero2 zero3 --doc   # and write docs/training_memory.md
  python bench/train_memory.py --strategies fsdp --steps 8
  python bench/train_memory.py --strategies ddp fsdp zero2 zero3 --reuse --doc   # the last runs' reports

Beside each measured row stands the model state hico.train.plan computes for it (float32 on CPU: 4 + 4 + 8 bytes
per trained parameter, sharded as the strategy shards), so the measurement checks the formula of the GPU table.

A strategy is an entry of STRATEGIES: the `--set` overrides that select it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache" / "train_memory"
STRATEGIES: dict[str, dict[str, str]] = {
    "ddp": {},  # Trainer's default on several processes
    "fsdp": {"fsdp": "full_shard auto_wrap", "fsdp_config": str(ROOT / "configs" / "fsdp.json")},
    "zero2": {"deepspeed": str(ROOT / "configs" / "deepspeed" / "zero2.json")},
    "zero3": {"deepspeed": str(ROOT / "configs" / "deepspeed" / "zero3.json")},
}
SETTINGS = {"train": "[projector, llm]", "batch_size": 1, "grad_accum": 1, "min_frames": 4, "max_frames": 8,
            "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 1_000_000, "lr": 1e-5}
GIB = 1024 ** 3
DOC = ROOT / "docs" / "training_memory.md"
BEGIN, END = "<!-- train_memory: begin -->", "<!-- train_memory: end -->"


def model_config() -> dict:
    """The official config.json of the reduced-depth, real-width model."""
    from hico.synthetic.checkpoints import tiny_official_config

    config = tiny_official_config(vocab_size=151936, hidden_size=1536, layers=2, heads=12, kv_heads=2,
                                  vision_width=1024, vision_layers=2, vision_heads=16, image_size=224, patch_size=16)
    config.update(intermediate_size=8960, tie_word_embeddings=True)
    return config


def prepare() -> tuple[Path, Path]:
    """The checkpoint and the data, written once into the cache."""
    from hico.synthetic import videos
    from hico.synthetic.checkpoints import write_random_checkpoint

    checkpoint, task = CACHE / "model", CACHE / "task"
    if not (checkpoint / "config.json").exists():
        shutil.rmtree(checkpoint, ignore_errors=True)
        write_random_checkpoint(checkpoint, model_config(), seed=0)
    if not (task / "data.json").exists():
        videos.write_colour_task(task)
    return checkpoint, task / "data.json"


def peak_rss() -> int:
    """This process's largest resident set so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(strategy: str, steps: int, report: Path) -> None:
    """One process of the run (under torchrun): train, then write rank<R>.json with its peaks and step times."""
    import psutil
    from transformers import TrainerCallback

    from hico.train.run import train
    from hico.train.stages import load_stage, parse_overrides

    class Measure(TrainerCallback):
        def __init__(self) -> None:
            self.step_ends: list[float] = []
            self.loading_peak = self.training_peak = self.resident = 0

        def on_train_begin(self, args, state, control, **kwargs) -> None:
            self.loading_peak = peak_rss()

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.step_ends.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs) -> None:
            self.training_peak, self.resident = peak_rss(), psutil.Process().memory_info().rss

    checkpoint, data = prepare()
    overrides = {**SETTINGS, **STRATEGIES[strategy], "max_steps": steps}
    config = load_stage(3, parse_overrides([f"{k}={v}" for k, v in overrides.items()]))
    measure = Measure()
    output = CACHE / "runs" / strategy
    train(checkpoint, data, output, config, progress=False, callbacks=[measure])
    ends = measure.step_ends
    record = {"loading_peak": measure.loading_peak, "training_peak": measure.training_peak, "final_peak": peak_rss(),
              "resident": measure.resident,
              "steps_per_second": (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else None}
    (report / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))


def run(strategy: str, steps: int, processes: int) -> list[dict]:
    """torchrun this script's worker for one strategy; the processes' records, rank order."""
    report = CACHE / "reports" / strategy
    shutil.rmtree(report, ignore_errors=True)
    shutil.rmtree(CACHE / "runs" / strategy, ignore_errors=True)
    report.mkdir(parents=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               __file__, "--worker", strategy, "--steps", str(steps), "--report", str(report)]
    result = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{strategy} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    shutil.rmtree(CACHE / "runs" / strategy, ignore_errors=True)  # the 1.4 GB final model is not needed
    return reports(strategy, processes)


def reports(strategy: str, processes: int) -> list[dict]:
    """The processes' records of a strategy's last run, rank order."""
    report = CACHE / "reports" / strategy
    missing = [rank for rank in range(processes) if not (report / f"rank{rank}.json").exists()]
    if missing:
        sys.exit(f"{strategy}: no report of process {missing[0]} in {report}; run it first (without --reuse)")
    return [json.loads((report / f"rank{rank}.json").read_text()) for rank in range(processes)]


def table(rows: dict[str, list[dict]], steps: int, processes: int) -> str:
    def gib(records: list[dict], field: str) -> str:
        return " / ".join(f"{r[field] / GIB:.2f}" for r in records)

    lines = [f"Command: `python bench/train_memory.py --strategies {' '.join(rows)} --steps {steps}`. Machine: "
             f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, float32, gloo. Date: {date.today()}. Model: "
             "Qwen2.5-1.5B LLM width with 2 layers (tied 151,936 x 1536 embedding) + UMT-L tower width with 2 blocks "
             "at 224, random weights; stage 3 training the LLM and projector (tower frozen), batch 1 per process. "
             "Per process (process 0 / 1), GiB: peak RSS of the run so far before the first step (model loaded and "
             "wrapped), when training ends and after the final save; and the RSS when training ends.", "",
             "| strategy | processes | peak RSS, loaded | peak RSS, trained | peak RSS, saved | RSS after training | "
             "model state computed | steps/s |", "|---|---|---|---|---|---|---|---|"]
    for strategy, records in rows.items():
        speed = records[0]["steps_per_second"]
        peaks = " | ".join(gib(records, field) for field in ("loading_peak", "training_peak", "final_peak"))
        lines.append(f"| {strategy} | {processes} | {peaks} | {gib(records, 'resident')} | "
                     f"{computed_state(strategy, processes) / GIB:.2f} | {f'{speed:.3f}' if speed else 'n/a'} |")
    return "\n".join(lines)


def computed_state(strategy: str, processes: int) -> int:
    """Parameters, gradients and AdamW states per process by hico.train.plan, float32 as trained here."""
    from hico.train.plan import AUTOCAST, count_parameters, memory_plan

    counts = count_parameters(model_config())
    return memory_plan(counts, ("projector", "llm"), strategy, processes, precision=AUTOCAST).total


def write_doc(text: str, doc: Path = DOC) -> None:
    """The table between the markers of docs/training_memory.md."""
    page = doc.read_text()
    if BEGIN not in page or END not in page:
        sys.exit(f"{doc} lacks the markers {BEGIN} / {END}")
    head, rest = page.split(BEGIN, 1)
    doc.write_text(head + BEGIN + "\n" + text.rstrip() + "\n" + END + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", choices=sorted(STRATEGIES), default=["ddp", "fsdp"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="tabulate the reports of the last runs, run nothing")
    parser.add_argument("--doc", action="store_true", help="also write the table into docs/training_memory.md")
    parser.add_argument("--worker", choices=sorted(STRATEGIES), help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.report)
        return
    if args.reuse:
        rows = {strategy: reports(strategy, args.processes) for strategy in args.strategies}
    else:
        prepare()  # once, before the processes that read it start
        rows = {strategy: run(strategy, args.steps, args.processes) for strategy in args.strategies}
    text = table(rows, args.steps, args.processes)
    print(text)
    if args.doc:
        write_doc(text)


if __name__ == "__main__":
    main()
