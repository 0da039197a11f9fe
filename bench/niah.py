"""NIAH at 10,000 frames on this machine: a tiny random hico model, a 10,000-frame haystack, single-hop needles.

Shows that the whole pipeline (haystack encoded once and cached, needle tokens spliced in, 160,064 visual
tokens prefilled, official scoring) runs on 2 CPU cores, and what it costs. Accuracy of a random model is
meaningless here: the trained embedded model is measured in its own issue.

  python bench/niah.py                               # 10,000 frames, depth 0.5, dropout off and on
  python bench/niah.py --frames 2000,10000 --depths 0,0.5,1 --dropout off
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import hico
from hico.synthetic import videos
from hico.niah.build import GridOptions, build
from hico.niah.records import load_needles
from hico.niah.run import RunOptions, read_results, run
from hico.niah.synthetic import NeedleSetOptions, write_needle_set
from hico.synthetic.checkpoints import tiny_official_config, write_random_checkpoint

CACHE = Path(__file__).resolve().parent / ".cache"
HAYSTACK_FRAMES = 10_000
DROPOUT = {"mm_llm_compress": True, "llm_compress_type": "uniform0_attention", "llm_compress_layer_list": [1, 2],
           "llm_image_token_ratio_list": [1.0, 0.5, 0.25]}


def inputs() -> tuple[Path, Path, Path]:
    CACHE.mkdir(exist_ok=True)
    haystack = CACHE / f"niah_haystack_{HAYSTACK_FRAMES}.mp4"
    if not haystack.exists():
        videos.write_video(haystack, HAYSTACK_FRAMES, fps=1.0, width=128, height=128, gop=250, progress=True)
    needles = CACHE / "niah-needles"
    if not needles.exists():
        write_needle_set(needles, NeedleSetOptions(single=1, multi=0, size=128, seed=0))
    model = CACHE / "niah-tiny"
    if not model.exists():
        write_random_checkpoint(model, tiny_official_config(dropout=DROPOUT), seed=0)
    return haystack, needles / "niah-synthetic-singlehop.json", model


def measure(frames: tuple[int, ...], depths: tuple[float, ...], dropout: str, haystack: Path, needles: Path,
            model: hico.Hico) -> list[dict]:
    folder = CACHE / f"niah-bench-{dropout}"
    shutil.rmtree(folder, ignore_errors=True)
    build(folder, haystack, load_needles(needles), GridOptions(frames=frames, depths=depths), progress=False)
    start = time.perf_counter()
    results = run(folder, model, options=RunOptions(dropout=dropout))
    total = time.perf_counter() - start
    rows = read_results(results)
    encode = total - sum(r["seconds"] for r in rows)
    return [dict(r, haystack_seconds=encode) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default=str(HAYSTACK_FRAMES))
    parser.add_argument("--depths", default="0.5")
    parser.add_argument("--dropout", nargs="+", choices=("off", "model"), default=["off", "model"])
    args = parser.parse_args()
    frames = tuple(int(x) for x in args.frames.split(","))
    depths = tuple(float(x) for x in args.depths.split(","))
    haystack, needles, folder = inputs()
    model = hico.load(folder)
    rows = [row for dropout in args.dropout for row in measure(frames, depths, dropout, haystack, needles, model)]
    lines = ["## NIAH at 10,000 frames on a CPU", "",
             f"Command: `python bench/niah.py --frames {args.frames} --depths {args.depths} --dropout "
             f"{' '.join(args.dropout)}`. Machine: {platform.machine()}, 2 CPU cores, no GPU, float32. Date: "
             f"{date.today()}. Model: tiny random hico checkpoint (`hico.synthetic.checkpoints`: UMT 2 layers width 64 at 64 px, "
             "Qwen2 4 layers hidden 64, 4 heads). Haystack: a generated 10,000 s video at 1 fps, 128x128 H.264. "
             "Needle: one synthetic single-hop needle (`hico niah needles`), embedding mode. Dropout `model` = "
             "uniform0_attention after layers [1, 2], ratios [1, 0.5, 0.25]; `off` = the official NIAH protocol.",
             "", "| frames | depth | dropout | visual tokens | seconds per case | peak RSS MB per case | "
             "haystack encode + cache s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['frames']} | {r['depth']:.2f} | {r['dropout']} | {r['visual_tokens']} | "
                     f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['haystack_seconds']:.1f} |")
    lines += ["", "Peak RSS is the process's (Python, torch, model and all) during that case. The haystack is "
              "encoded once per benchmark folder and cached; a second run over the same folder skips it."]
    print("\n".join(lines))
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ingest import write_doc

    write_doc("\n".join(lines) + "\n", "niah")


if __name__ == "__main__":
    main()
