"""`hico niah needles|build|run|report`: the needle-in-a-video-haystack benchmark from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.cli import Parser, add_dropout_args, add_model_args, dropout_schedule, load_model
from hico.errors import OptionError


def _number_list(text: str, kind: type, name: str) -> tuple:
    """'1000,2000' or 'start:stop:step' (stop included) -> numbers."""
    try:
        if ":" in text:
            start, stop, step = (kind(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError("the step must be positive")
            count = int(round((stop - start) / step)) + 1
            return tuple(kind(round(start + i * step, 6)) for i in range(max(count, 0)))
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise OptionError(f"{name} takes comma-separated numbers or start:stop:step, got {text!r} ({exc})")


def cmd_niah_needles(args: argparse.Namespace) -> None:
    from hico.niah.synthetic import NeedleSetOptions, write_needle_set

    options = NeedleSetOptions(single=args.single, multi=args.multi, size=args.size, seed=args.seed,
                               attributes=tuple(args.attributes.split(",")))
    for path in write_needle_set(args.out, options):
        print(f"wrote {path}")


def cmd_niah_build(args: argparse.Namespace) -> None:
    from hico.niah.build import GridOptions, build
    from hico.niah.records import load_needles

    grid = GridOptions(frames=_number_list(args.frames, int, "--frames"),
                       depths=_number_list(args.depths, float, "--depths"), mode=args.mode,
                       haystack_fps=args.haystack_fps, loop=args.loop, video_size=args.video_size)
    needles = [n for path in args.needles for n in load_needles(path, args.image_root)]
    folder = build(args.out, args.haystack, needles, grid, needle_files=args.needles)
    print(f"wrote {folder} ({len(needles)} needles, frames {list(grid.frames)}, {grid.mode} mode)")


def cmd_niah_run(args: argparse.Namespace) -> None:
    from hico.niah.build import load_benchmark
    from hico.niah.run import RunOptions, run

    options = RunOptions(dropout=dropout_schedule(args), limit=args.limit, answer=args.answer)
    load_benchmark(args.bench)  # a wrong folder fails before a large model is loaded
    results = run(args.bench, load_model(args), args.results, options)
    print(f"results in {results}")
    if not args.no_report:
        _report(args.bench, results, None)


def cmd_niah_report(args: argparse.Namespace) -> None:
    from hico.niah.build import load_benchmark

    load_benchmark(args.bench)
    results = Path(args.results) if args.results else None
    if results is None:
        found = sorted(Path(args.bench).glob("results-*.jsonl"))
        if not found:
            raise OptionError(f"{args.bench}: no results yet; run `hico niah run {args.bench} --model PATH` first")
        if len(found) > 1:
            raise OptionError(f"{args.bench}: holds {len(found)} results files; pick one with --results")
        results = found[0]
    _report(args.bench, results, args.out)


def _report(bench: str, results: Path, out: str | None) -> None:
    from hico.niah.report import report

    for path in report(bench, results, out):
        print(f"wrote {path}")


def register(sub) -> None:
    niah = sub.add_parser("niah", help="needle-in-a-video-haystack benchmark: needles, build, run, report")
    steps = niah.add_subparsers(dest="step", required=True, parser_class=Parser)

    needles = steps.add_parser("needles", help="write a synthetic needle set in the official formats")
    needles.add_argument("--out", required=True, help="new folder for the images and the two JSON files")
    needles.add_argument("--single", type=int, default=20, help="single-hop records (default 20)")
    needles.add_argument("--multi", type=int, default=10, help="multi-hop records (default 10)")
    needles.add_argument("--size", type=int, default=256, help="picture side in pixels")
    needles.add_argument("--seed", type=int, default=0)
    needles.add_argument("--attributes", default="colour,shape,symbol",
                         help="what questions may ask about, comma-separated (default colour,shape,symbol)")
    needles.set_defaults(func=cmd_niah_needles)

    build = steps.add_parser("build", help="a grid of frame counts x depths from a haystack video and needles")
    build.add_argument("--haystack", required=True, help="the haystack video")
    build.add_argument("--needles", required=True, action="append",
                       help="needle JSON in the official format (repeat for single- and multi-hop)")
    build.add_argument("--image-root", help="folder the records' image paths start from (default: the JSON's)")
    build.add_argument("--out", required=True, help="new folder for the benchmark")
    build.add_argument("--frames", default="1000:10000:1000", help="haystack frames per case (multiples of 4)")
    build.add_argument("--depths", default="0:1:0.2", help="single-hop needle depths in [0, 1]")
    build.add_argument("--mode", choices=("embedding", "video"), default="embedding",
                       help="embedding: hico splices needle tokens; video: writes a video file per case")
    build.add_argument("--haystack-fps", type=float, default=1.0, help="haystack frames per second of video")
    build.add_argument("--loop", action="store_true", help="repeat a too-short haystack (the report says so)")
    build.add_argument("--video-size", type=int, default=448, help="video mode: frame side in pixels")
    build.set_defaults(func=cmd_niah_build)

    run = steps.add_parser("run", help="answer every case with a model (resumable), then write the report")
    run.add_argument("bench", help="benchmark folder from `hico niah build`")
    add_model_args(run)
    run.add_argument("--results", help="results JSONL (default: results-<model>.jsonl in the benchmark folder)")
    add_dropout_args(run, default="off")  # the official NIAH runs without in-LLM dropout
    run.add_argument("--limit", type=int, help="answer at most N new cases (a later run resumes)")
    run.add_argument("--answer", choices=("letter", "open"), default="letter",
                     help="letter: the official protocol (the option letter); open: ask without the options and "
                          "compare the generated answer with the right option's text")
    run.add_argument("--no-report", action="store_true", help="skip writing the report")
    run.set_defaults(func=cmd_niah_run)

    rep = steps.add_parser("report", help="heat-map PNG and Markdown tables from the results")
    rep.add_argument("bench", help="benchmark folder")
    rep.add_argument("--results", help="results JSONL (default: the only one in the benchmark folder)")
    rep.add_argument("--out", help="folder for the report (default: the benchmark folder)")
    rep.set_defaults(func=cmd_niah_report)
