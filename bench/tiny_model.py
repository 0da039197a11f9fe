"""NIAH quality and cost of the embedded toy model on held-out synthetic haystacks.

Held out from training: the haystack (`hico.synthetic.tasks.write_haystack`: shots of procedural motion and pans over
scikit-image photos never used in training, other seeds) and the needles (`hico niah needles`, another seed,
colour and shape questions). The model trained on videos of at most 128 frames.

  python bench/tiny_model.py --frames 1024 --needles 8                       # open answers, dropout off
  python bench/tiny_model.py --frames 4096 --needles 4 --dropout model
  python bench/tiny_model.py --frames 1024 --needles 8 --answer letter       # the official letter protocol
  python bench/tiny_model.py --summary                # one heat-map per setting over every frame count run
  python bench/tiny_model.py --frames 1024 --model build/tiny-model-pool/model --tag pool   # another model
  python bench/tiny_model.py --describe 30 --frames 8   # "Describe the picture" on 30 unseen demo videos
  python bench/tiny_model.py --frames 1024 --photos train   # haystack of the training photos (a diagnostic)
  python bench/tiny_model.py --frames 1024 --precision int8  # bfloat16 or int8 LLM linears (kept apart)

Each run prints accuracy, seconds and peak RSS per answer, and writes the heat-map and Markdown report into
bench/.cache/tiny-model/<name>/ (`hico niah report`); runs of other models (`--tag`) are kept apart and left out
of `--summary`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import hico
from hico.embedded import embedded_path
from hico.embedded.recipe import ATTRIBUTES
from hico.niah.build import GridOptions, build, load_benchmark
from hico.niah.records import load_needles
from hico.niah.report import heatmap, report
from hico.niah.run import RunOptions, read_results, run
from hico.niah.synthetic import NeedleSetOptions, write_needle_set
from hico.synthetic.pictures import QUESTIONS
from hico.synthetic.tasks import HELDOUT_PHOTOS, TRAIN_PHOTOS, write_haystack

CACHE = Path(__file__).resolve().parent / ".cache" / "tiny-model"
HAYSTACK_SEED, NEEDLE_SEED = 101, 202  # training used seeds 1-3
PHOTOS = {"heldout": HELDOUT_PHOTOS, "train": TRAIN_PHOTOS}
PRECISIONS = ("float32", "bfloat16", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--needles", type=int, default=8)
    parser.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--answer", choices=("open", "letter"), default="open")
    parser.add_argument("--dropout", choices=("off", "model"), default="off")
    parser.add_argument("--model", help="another checkpoint folder (default: the embedded model)")
    parser.add_argument("--tag", default="", help="name for --model's results (needed with --model)")
    parser.add_argument("--photos", choices=tuple(PHOTOS), default="heldout",
                        help="haystack photos: held out from training (the benchmark) or the training ones")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="the model's dtype, or int8 LLM linears (float32 elsewhere); results kept apart")
    parser.add_argument("--summary", action="store_true", help="combine the runs so far into heat-maps in docs/")
    parser.add_argument("--describe", type=int, metavar="N",
                        help="instead of NIAH: describe N unseen demo videos of --frames frames (seeds 2000+)")
    args = parser.parse_args()
    if bool(args.model) != bool(args.tag) or "-" in args.tag:
        parser.error("--model and --tag go together, and the tag has no '-'")
    if args.summary:
        summary()
        return
    if args.describe:
        describe(hico.load(args.model or embedded_path()), args.describe, args.frames, args.tag or "embedded")
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    suffix = "-train" if args.photos == "train" else ""
    haystack = CACHE / f"haystack-{args.frames}{suffix}.mp4"
    if not haystack.exists():
        write_haystack(haystack, args.frames, seed=HAYSTACK_SEED + args.frames, photos=PHOTOS[args.photos])
    needles = CACHE / f"needles-{args.needles}"
    if not needles.exists():
        write_needle_set(needles, NeedleSetOptions(single=args.needles, multi=0, seed=NEEDLE_SEED,
                                                   attributes=ATTRIBUTES))
    bench = CACHE / f"niah-f{args.frames}-n{args.needles}{suffix}"
    if not bench.exists():
        depths = tuple(float(d) for d in args.depths.split(","))
        build(bench, haystack, load_needles(needles / "niah-synthetic-singlehop.json"),
              GridOptions(frames=(args.frames,), depths=depths))
    model = hico.load(args.model or embedded_path(),
                      dtype=torch.bfloat16 if args.precision == "bfloat16" else torch.float32,
                      quantize="int8" if args.precision == "int8" else None)
    tags = [t for t in (args.tag, "" if args.precision == "float32" else args.precision) if t]
    setting = "-".join([args.answer, args.dropout, *tags])
    results = bench / f"results-{setting}.jsonl"
    start = time.perf_counter()
    run(bench, model, results, RunOptions(dropout=args.dropout, answer=args.answer))
    rows = read_results(results)
    out = bench / f"report-{setting}"
    report(bench, results, out)
    right = sum(all(r["correct"]) for r in rows)
    _, cases = load_benchmark(bench)
    asked = {c["case"]: next(a for a, q in QUESTIONS.items() if q in c["questions"][0]) for c in cases}
    parts = {a: [r["correct"][0] for r in rows if asked[r["case"]] == a] for a in ATTRIBUTES}
    print("  ".join(f"{a} {sum(v)}/{len(v)}" for a, v in parts.items() if v))
    seconds = statistics.median(r["seconds"] for r in rows)
    print(f"{args.tag or 'embedded'}  {args.precision}  frames {args.frames}  photos {args.photos}  "
          f"answer {args.answer}  dropout {args.dropout}: {right}/{len(rows)} right ({right / len(rows):.1%}); "
          f"{seconds:.2f} s per answer (median), peak RSS {max(r['peak_rss_mb'] for r in rows):.0f} MB, "
          f"visual tokens {rows[0]['visual_tokens']}, wall {time.perf_counter() - start:.0f} s; report in {out}")


def describe(model, videos: int, frames: int, name: str) -> None:
    """Colour and shape words right when the model describes unseen demo videos (one picture each)."""
    import tempfile

    from hico.synthetic.tasks import CAPTION_QUESTION, write_demo_video
    from hico.video import SamplingOptions

    colour = shape = 0
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(2000, 2000 + videos):
            path = Path(folder) / f"{seed}.mp4"
            spec, _ = write_demo_video(path, frames=frames, seed=seed)
            words = model.answer(model.encode_video(path, SamplingOptions.plain(num_frames=frames)),
                                 CAPTION_QUESTION).split()
            colour += len(words) == 3 and words[1] == spec.colour
            shape += len(words) == 3 and words[2] == spec.shape
    print(f"{name}  describe {videos} videos of {frames} frames: colour {colour}/{videos}, shape {shape}/{videos}")


def summary(docs: Path = Path(__file__).resolve().parents[1] / "docs") -> None:
    """Depth x frames heat-maps (one per answer mode and dropout) from every run in the cache."""
    cells: dict[tuple[str, str], dict[tuple[int, float], list[bool]]] = {}
    for path in sorted(CACHE.glob("niah-f*-n*/results-*-*.jsonl")):
        answer, dropout, *tag = path.stem.removeprefix("results-").split("-")
        if tag or path.parent.name.endswith("-train"):
            continue
        for row in read_results(path):
            cells.setdefault((answer, dropout), {}).setdefault((row["frames"], row["depth"]), []).append(
                row["correct"][0])
    for (answer, dropout), table in sorted(cells.items()):
        frames = sorted({f for f, _ in table})
        depths = sorted({d for _, d in table})
        grid = [[sum(table[f, d]) / len(table[f, d]) if (f, d) in table else None for f in frames] for d in depths]
        per_frames = {f: [v for (g, _), rows in table.items() if g == f for v in rows] for f in frames}
        title = "Toy model, held-out NIAH (" + ", ".join(
            f"{f}: {sum(v) / len(v):.0%}" for f, v in per_frames.items()) + f"), {answer} answers, dropout {dropout}"
        out = heatmap(grid, [str(f) for f in frames], [f"{d:.0%}" for d in depths], title, "frames", "depth",
                      docs / f"tiny-model-niah-{answer}-{dropout}.png")
        print(f"{out}: " + ", ".join(f"{f} frames {sum(v)}/{len(v)}" for f, v in per_frames.items()))


if __name__ == "__main__":
    main()
