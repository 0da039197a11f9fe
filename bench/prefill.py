"""Prefill with progressive dropout (uniform0_attention, layers ~L/7 and L/2, ratios [1, 0.75, 0.25]) vs none,
on a small random Qwen2 with 4k and 16k visual tokens; and the peak memory of the text-guided scoring step.

  python bench/prefill.py                          # 28 layers, hidden 256, CPU float32
  python bench/prefill.py --visual 4096 --layers 14
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import torch

from hico.compress import DropSchedule
from hico.model import IMAGE_TOKEN_INDEX
from hico.synthetic.checkpoints import random_model, tiny_official_config

TEXT_BEFORE, TEXT_AFTER = 14, 30  # system header before the video, time message + question after it


def build(layers: int, hidden: int):
    config = tiny_official_config(hidden_size=hidden, layers=layers, heads=8, kv_heads=2, vocab_size=512)
    return random_model(config, seed=0)


def prompt(model, visual: int):
    ids = torch.randint(3, 500, (TEXT_BEFORE + 1 + TEXT_AFTER,))
    ids[TEXT_BEFORE] = IMAGE_TOKEN_INDEX
    return model.embed(ids, torch.randn(visual, model.config.hidden_size))


def timed_prefill(model, embeds, span, schedule: DropSchedule, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.prefill(embeds, span, schedule)
        best = min(best, time.perf_counter() - start)
    return best


def scoring_peak_bytes(model, embeds, span, layer: int) -> int:
    """Peak bytes allocated inside one text-guided scoring call (CPU profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    hidden = embeds
    positions = torch.arange(hidden.shape[1])[None]
    target = model.llm.model.layers[layer]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model.visual_scores(target, hidden, positions, span.start, span.count, None)
    events = sorted((e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.cpu_memory_usage
        peak = max(peak, current)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visual", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build(args.layers, args.hidden)
    drop_layers = (max(1, round(args.layers / 7)), args.layers // 2)
    schedule = DropSchedule("uniform0_attention", drop_layers, (1.0, 0.75, 0.25))
    rows = []
    with torch.inference_mode():
        for visual in args.visual:
            embeds, span = prompt(model, visual)
            t_full = timed_prefill(model, embeds, span, DropSchedule(), args.repeats)
            t_drop = timed_prefill(model, embeds, span, schedule, args.repeats)
            rows.append((visual, embeds.shape[1], t_full, t_drop))
            print(f"{visual} visual tokens: no dropout {t_full:.2f} s, dropout {t_drop:.2f} s, "
                  f"{t_full / t_drop:.2f}x", flush=True)
        memory = []
        for visual in (2048, 4096, 8192, 16384):
            embeds, span = prompt(model, visual)
            peak = scoring_peak_bytes(model, embeds, span, drop_layers[1])
            memory.append((embeds.shape[1], peak))
            print(f"scoring at {embeds.shape[1]} tokens: peak {peak / 2**20:.2f} MiB", flush=True)
    lines = ["## Prefill with progressive dropout", "",
             f"Command: `python bench/prefill.py --layers {args.layers} --hidden {args.hidden}`. Machine: "
             f"{platform.machine()}, 2 CPU cores, no GPU, torch {torch.__version__}, float32, SDPA. "
             f"Date: {date.today().isoformat()}. Random Qwen2: {args.layers} layers, hidden {args.hidden}, "
             f"8 heads, 2 KV heads; {TEXT_BEFORE + TEXT_AFTER} text tokens around the visual tokens. Dropout: "
             f"uniform0_attention after layers {list(drop_layers)}, ratios [1, 0.75, 0.25]. Best of {args.repeats}.",
             "", "| visual tokens | sequence | no dropout s | with dropout s | speed-up |", "|---|---|---|---|---|"]
    for visual, length, t_full, t_drop in rows:
        lines.append(f"| {visual} | {length} | {t_full:.2f} | {t_drop:.2f} | {t_full / t_drop:.2f}x |")
    lines += ["", "Peak memory allocated by one text-guided scoring step (last prompt token vs all keys; "
              "torch profiler memory events):", "", "| sequence | peak MiB | bytes per token | an L x L float32 "
              "mask would need MiB |", "|---|---|---|---|"]
    for length, peak in memory:
        lines.append(f"| {length} | {peak / 2**20:.2f} | {peak / length:.0f} | {4 * length * length / 2**20:.0f} |")
    big = [r for r in rows if r[0] >= 16384]
    if big:
        speedup = big[0][2] / big[0][3]
        lines += ["", f"Target (issue 3): >= 1.8x faster at 16k visual tokens: {speedup:.2f}x, "
                  f"{'met' if speedup >= 1.8 else 'NOT met'}."]
    per_token = [peak / length for length, peak in memory]
    lines.append(f"Scoring memory per token stays within {min(per_token):.0f}-{max(per_token):.0f} bytes from "
                 f"{memory[0][0]} to {memory[-1][0]} tokens: linear in sequence length.")
    from ingest import write_doc

    write_doc("\n".join(lines) + "\n", "prefill")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
