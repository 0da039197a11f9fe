"""A second question about a video vs the first: the video's KV prefix kept (issue 18).

For each dropout type and video length, on the embedded toy model (or --model FOLDER) with random visual
tokens (16 per frame; prefill cost does not depend on their values): the full prefill of a question (what
every question cost before prefixes were kept), the first question with a kept prefix (prefix + question),
and a second question (its own tokens only), plus the size of the kept prefix per frame.

  python bench/prefix.py                           # 256, 1,024 and 4,096 frames, every dropout type
  python bench/prefix.py --frames 1024 --kinds off
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

import hico
from hico.compress import DROP_KINDS, DropSchedule
from hico.embedded import embedded_path
from hico.memory import VideoMemory
from hico.prompt import chat_prompt, tokenize

QUESTIONS = ("What colour is the picture in the video?", "Which shape does the picture show? Answer in one word.")
RESULTS = Path(__file__).resolve().parent / ".cache" / "prefix.json"  # rows by (frames, dropout): reruns update
TIME_MSG = "The video lasts for {n} seconds, and {n} frames are uniformly sampled from it."


def schedule_for(kind: str, layers: int) -> DropSchedule:
    """Drops after layers ~L/4, L/2 and 3L/4 (the released configs: 8, 16, 24 of 28), ratios 0.75, 0.5, 0.25."""
    if kind == "off":
        return DropSchedule()
    after = sorted({max(1, layers * s // 4) for s in (1, 2, 3)} - {layers})
    ratios = (1.0, 0.75, 0.5, 0.25)[: len(after) + 1]
    return DropSchedule(kind, tuple(after), ratios)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--kinds", nargs="+", default=["off", *DROP_KINDS], choices=["off", *DROP_KINDS])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded toy model)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for the second question")
    parser.add_argument("--full-up-to", type=int, default=1024,
                        help="above this many frames the full prefill is not run again: the first question's "
                             "prefill (prefix + question) does the same work and stands for it")
    args = parser.parse_args()
    model = hico.load(args.model or embedded_path())
    layers = model.model.config.llm["num_hidden_layers"]
    hidden = model.model.config.hidden_size
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with torch.inference_mode():
        for frames in args.frames:
            tokens = torch.randn(16 * frames, hidden, generator=torch.Generator().manual_seed(frames))
            prompts = [tokenize(chat_prompt(q, TIME_MSG.format(n=frames)), model.tokenizer) for q in QUESTIONS]
            for kind in args.kinds:
                schedule = schedule_for(kind, layers)

                def memory() -> VideoMemory:
                    return VideoMemory(tokens, list(range(frames)), [float(i) for i in range(frames)], "", frames,
                                       "random", key="")

                full = None
                if frames <= args.full_up_to:
                    model.reuse_prefix = False
                    full = timed(lambda: model.prefill(memory(), prompts[0], schedule), 1)
                    model.reuse_prefix = True
                kept = memory()
                first = timed(lambda: model.prefill(kept, prompts[0], schedule), 1)
                second = timed(lambda: model.prefill(kept, prompts[1], schedule), args.repeats)
                size = next(iter(kept.prefixes.values())).nbytes
                saved[f"{frames} {kind}"] = (frames, kind, full, first, second, size / frames)
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(saved))
                print(f"{frames} frames, {kind}: full {full or 0:.3f} s, first {first:.3f} s, second "
                      f"{second * 1e3:.1f} ms, {(full or first) / second:.0f}x, prefix {size / frames / 1024:.1f} "
                      "KiB/frame", flush=True)
    order = ["off", *DROP_KINDS]
    rows = sorted(saved.values(), key=lambda r: (r[0], order.index(r[1])))
    name = "the embedded toy model" if args.model is None else f"`{args.model}`"
    lines = ["## A second question about a video: the kept KV prefix (issue 18)", "",
             f"Command: `python bench/prefix.py{'' if args.model is None else ' --model ' + args.model}`. "
             f"Machine: {platform.machine()}, 2 CPU cores (load average {os.getloadavg()[0]:.1f} at the end), no GPU, torch {torch.__version__}, float32. "
             f"Date: {date.today().isoformat()}. Model: {name} ({layers} layers, hidden {hidden}), random visual "
             f"tokens (16 per frame). Dropout after layers {list(schedule_for('uniform', layers).layers)}, ratios "
             f"[1, 0.75, 0.5, 0.25]. Prefill only (to the first answer token), chunks of {model.prefill_chunk} "
             f"tokens. *full*: the whole prompt, as every question cost before (one run; above "
             f"{args.full_up_to} frames not run, the first question's prefill doing the same work stands for it); "
             f"*first*: the prefix kept plus the question (one run); *second*: another question after it (best of "
             f"{args.repeats}). Rows are kept in bench/.cache/prefix.json, so a rerun with some --frames/--kinds "
             "updates only those rows. The prefix is the size of its keys and values (and, with text-guided "
             "dropout, the hidden states it resumes from).", "",
             "| frames | dropout | full s | first s | second ms | full (or first) / second | prefix KiB per frame |",
             "|---|---|---|---|---|---|---|"]
    for frames, kind, full, first, second, per_frame in rows:
        shown = "-" if full is None else f"{full:.3f}"
        lines.append(f"| {frames} | {kind} | {shown} | {first:.3f} | {second * 1e3:.1f} | "
                     f"{(full or first) / second:.0f}x | {per_frame / 1024:.1f} |")
    target = [r for r in rows if r[0] == 1024 and r[1] == "off"]
    if target:
        ratio = (target[0][2] or target[0][3]) / target[0][4]
        lines += ["", f"Target: a second question >= 20x faster than the full prefill at 1,024 frames, dropout off: "
                  f"{ratio:.0f}x, {'met' if ratio >= 20 else 'NOT met'}. With text-guided dropout the layers from "
                  "the first text-guided drop on are recomputed for each question, which bounds the gain."]
    from ingest import write_doc

    write_doc("\n".join(lines) + "\n", "prefix")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
