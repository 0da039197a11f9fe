"""Live video (issue 25): how fast a stream is taken in, and what a question costs after a minute and after an hour.

- Ingest: frames/s that `LiveVideo.push` takes (each clip encoded by the tower, merged, projected and run through
  the LLM as it completes) with the embedded model; at UMT-L 224/448 tower shapes and Qwen2-7B / Qwen2.5-1.5B LLM
  widths, random weights at reduced depth (2 tower blocks, 1 LLM layer), extrapolated to the full depth
  (23 blocks, 28 / 28 layers) as bench/real_shapes.py does: the highest sampling rate that keeps up with real
  time is that many frames per second.
- Time to first token after 1 minute and after 1 hour of stream at 1 fps (embedded model), without a budget
  (dropout off) and with budgets of 1,024 and 16,384 visual tokens.

Recall (streaming NIAH against the budget and the eviction score) and time to first token with text-guided
in-LLM dropout against stream length: bench/live_niah.py, in its own section of docs/benchmarks.md.

  .venv/bin/python bench/live.py            # writes docs/benchmarks.md
  .venv/bin/python bench/live.py --no-doc --minutes 1 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import hico
from hico.embedded import WEIGHTS
from hico.synthetic.checkpoints import tiny_official_config, write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"UMT-L 224 + Qwen2-7B": (224, dict(hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
                                              intermediate_size=18944), 28),
          "UMT-L 448 + Qwen2.5-1.5B": (448, dict(hidden_size=1536, num_attention_heads=12, num_key_value_heads=2,
                                                 intermediate_size=8960), 28)}
TOWER_BLOCKS, FULL_TOWER = 2, 23


def frames(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def ingest_rate(model: hico.Hico, count: int, size: int) -> float:
    live = model.live(fps=1.0)
    pushed = frames(count, size)
    started = time.perf_counter()
    for i, frame in enumerate(pushed):
        live.push(frame, float(i))
    return count / (time.perf_counter() - started)


def real_shape_rate(name: str, work: Path) -> dict:
    """Seconds per clip of the tower (2 blocks) and of the LLM (1 layer) measured apart, each scaled to its
    full depth: frames/s = 4 / (tower * 23/2 + llm * layers)."""
    size, llm, layers = SHAPES[name]
    folder = work / name.replace(" ", "_").replace("+", "")
    if not folder.exists():
        config = tiny_official_config()
        config.update(llm, num_hidden_layers=1, vocab_size=1024, mm_hidden_size=1024, mm_llm_compress=False,
                      vision_config={"hidden_size": 1024, "num_hidden_layers": TOWER_BLOCKS, "num_attention_heads": 16,
                                     "patch_size": 16, "image_size": size, "num_frames": 4})
        write_random_checkpoint(folder, config, seed=0)
    model = hico.load(folder)
    live = model.live(fps=1.0)
    clip = torch.from_numpy(np.stack(frames(4, size))).float()[None].permute(0, 1, 4, 2, 3) / 255
    tower, llm_times = [], []
    with torch.inference_mode():
        for _ in range(4):
            started = time.perf_counter()
            tokens = model.model.encode_clips(clip).flatten(0, 1)
            tower.append(time.perf_counter() - started)
            started = time.perf_counter()
            live._reserve(tokens.shape[0])
            model.model.run_layers(tokens[None], live._cache, range(1), None, keep_all=False)
            llm_times.append(time.perf_counter() - started)
    tower_s = statistics.median(tower[1:]) * FULL_TOWER / TOWER_BLOCKS
    llm_s = statistics.median(llm_times[1:]) * layers
    return {"shape": name, "tower_s": tower_s, "llm_s": llm_s, "fps": 4 / (tower_s + llm_s)}


def ttft(model: hico.Hico, minutes: float, budget: int | None) -> dict:
    live = model.live(fps=1.0, budget_tokens=budget)
    pushed = frames(64, 64)
    count = int(minutes * 60)
    started = time.perf_counter()
    for i in range(count):
        live.push(pushed[i % len(pushed)], float(i))
    ingest = time.perf_counter() - started
    config = hico.GenerationConfig(max_new_tokens=1)
    firsts = [live.generate("What is happening now?", config=config).timings.first_token_s for _ in range(5)]
    return {"minutes": minutes, "budget": budget, "ttft_ms": 1000 * statistics.median(firsts[1:]),
            "kept": live.kept_tokens, "mb": live.memory_bytes / 2**20, "ingest_s": ingest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--work", default=str(ROOT / "build" / "bench-live"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = hico.load(WEIGHTS)
    embedded = ingest_rate(model, 400, 64)
    print(f"embedded: {embedded:.0f} frames/s", flush=True)
    shapes = []
    for name in SHAPES:
        shapes.append(real_shape_rate(name, work))
        print(shapes[-1], flush=True)
    rows = []
    for budget in [None, *args.budgets]:
        for minutes in args.minutes:
            rows.append(ttft(model, minutes, budget))
            print(rows[-1], flush=True)
    command = "python bench/live.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    lines = ["## Live video: ingest rate and time to first token (issue 25)\n",
             f"{date.today()}, {platform.machine()}, {os.cpu_count()} cores, float32, torch {torch.__version__}. "
             f"Measured by `{command}`.\n",
             f"Ingest (frames/s `LiveVideo.push` takes: each clip encoded, merged, projected and run through the LLM "
             f"as it completes): embedded model **{embedded:.0f}**.", "",
             "| shape (random weights, depth extrapolated) | tower s/clip | LLM s/clip | frames/s kept up with |",
             "|---|---:|---:|---:|"]
    lines += [f"| {s['shape']} | {s['tower_s']:.2f} | {s['llm_s']:.2f} | {s['fps']:.2f} |" for s in shapes]
    lines += ["", "So on these 2 cores a full-size model keeps up with real time at that many sampled frames per "
              "second or fewer (1 fps needs at least 1).", "",
              "Time to first token on the embedded model, 1 fps stream, dropout off (median of 4 questions):", "",
              "| budget (visual tokens) | stream | kept tokens | cache MB | TTFT ms |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['budget'] or 'none'} | {row['minutes']:g} min | {row['kept']:,} | {row['mb']:.1f} | "
                     f"{row['ttft_ms']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        sys.path.insert(0, str(ROOT / "bench"))
        from ingest import write_doc

        write_doc(text, "live")


if __name__ == "__main__":
    main()
