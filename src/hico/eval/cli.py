"""`hico eval`: run benchmark tasks with the official protocol; `hico eval --list` prints the tasks."""

from __future__ import annotations

import argparse
import os

from hico.cli import add_dropout_args, add_engine_args, add_model_args, dropout_schedule, load_model
from hico.errors import HicoError, OptionError
from hico.records import place

ANNOTATIONS_ENV = "HICO_EVAL_ANNOTATIONS"


class FrameCount(argparse.Action):
    """--num-frames, or its old spelling --frames (hidden): one value, and which spelling was typed, so that
    an error names the flag the user gave."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.num_frames_flag = option_string


def add_eval_sampling_args(parser: argparse.ArgumentParser) -> None:
    """The sampling options of every command that reads videos (`hico.cli.add_sampling_args`: --num-frames,
    --fps, --max-frames), with eval's meaning for "not given": the official setting of each benchmark."""
    group = parser.add_argument_group("sampling overrides (default: the official setting of each benchmark)")
    group.add_argument("--num-frames", type=int, action=FrameCount, help="exactly N frames per video")
    group.add_argument("--frames", type=int, action=FrameCount, dest="num_frames", help=argparse.SUPPRESS)
    group.add_argument("--fps", type=float, help="a target frame rate instead")
    group.add_argument("--max-frames", type=int, help="at most N frames per video")
    parser.set_defaults(num_frames_flag="--num-frames")


def register(sub) -> None:
    parser = sub.add_parser(
        "eval", help="evaluate on benchmarks (MVBench, MLVU, LVBench, LongVideoBench, Video-MME, Charades-STA, ...)",
        description="Answer every item of the named tasks (official lmms-eval names, comma-separated) with the "
                    "official prompts, settings and scoring; resumable; shards over torchrun processes. In-LLM "
                    "dropout is off unless --dropout asks for it, as in the official evaluation.")
    parser.add_argument("tasks", nargs="?", help="TASK[,TASK...], e.g. mvbench,mlvu_mc (see --list)")
    parser.add_argument("--list", action="store_true", help="print the tasks with their item counts and exit")
    parser.add_argument("--annotations", help=f"the official eval_annotations folder (default: ${ANNOTATIONS_ENV})")
    parser.add_argument("--video-root", help="folder holding the benchmarks' videos (layout in docs/eval.md)")
    parser.add_argument("--out", help="folder for results.jsonl, summary.json and report.md (reruns resume)")
    parser.add_argument("--subtitles", help="LongVideoBench subtitles/ folder or Video-MME .srt folder")
    parser.add_argument("--limit", type=int, help="only the first N items of each named task")
    parser.add_argument("--skip-missing", action="store_true",
                        help="record items whose video is missing or unreadable as skipped instead of stopping")
    add_eval_sampling_args(parser)
    parser.add_argument("--cache", help="folder to keep encoded videos, and their prefilled prompt prefix, in "
                                        "across runs (as hico chat --cache; a prefix takes several times the "
                                        "video's tokens on disk)")
    parser.add_argument("--decode-in-process", action="store_true",
                        help="decode on threads of this process instead of in background worker processes: no "
                             "protection against a decoder that hangs or crashes, and usually slower")
    parser.add_argument("--seed", type=int, default=0, help="seed of LongVideoBench's official random fallback")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(parser)
    add_engine_args(parser)
    add_dropout_args(parser, default="off")  # as the official evaluation: its wrapper sets mm_llm_compress = False
    parser.set_defaults(func=cmd_eval)


def annotations_folder(args: argparse.Namespace) -> str:
    folder = args.annotations or os.environ.get(ANNOTATIONS_ENV)
    if not folder:
        raise OptionError(f"give --annotations (the official eval_annotations folder) or set {ANNOTATIONS_ENV}")
    return folder


def cmd_list(args: argparse.Namespace) -> None:
    from hico.eval import get_task, tasks

    folder = args.annotations or os.environ.get(ANNOTATIONS_ENV)
    for name in tasks():
        count = "-"
        if folder:
            try:
                count = str(len(get_task(name).load(folder)))
            except HicoError:  # a task whose files the folder lacks (Perception Test has none officially)
                count = "no annotations"
        print(f"{name:40s} {count}")


def cmd_eval(args: argparse.Namespace) -> None:
    if args.list:
        return cmd_list(args)
    from hico.eval.runner import EvalOptions, prepare, run  # torch and transformers: not for `hico --help`

    if not args.tasks:
        raise OptionError("name the tasks to run, e.g. `hico eval mvbench ...` (`hico eval --list` prints them)")
    for name, value in (("--video-root", args.video_root), ("--out", args.out)):
        if not value:
            raise OptionError(f"{name} is required")
    if args.num_frames is not None and args.fps is not None:
        raise OptionError(f"give either {args.num_frames_flag} or --fps, not both")
    options = EvalOptions(limit=args.limit, skip_missing=args.skip_missing, num_frames=args.num_frames,
                          fps=args.fps, max_frames=args.max_frames, dropout=dropout_schedule(args),
                          subtitles=args.subtitles, cache_dir=args.cache, seed=args.seed,
                          progress=not args.no_progress, isolate=not args.decode_in_process)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    plan = prepare(names, annotations_folder(args), args.video_root, args.out, options)  # before any model work
    where = place()
    if args.device == "cuda" and "LOCAL_RANK" in os.environ:
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
        import torch  # loaded by the runner already; kept out of `hico --help`

        torch.cuda.set_device(args.device)  # the rank's GPU is the current one: its peak memory is recorded
    model = load_model(args)
    try:
        summary = run(plan, model, place=where)
    finally:
        if hasattr(model, "close"):  # an engine with processes of its own (vLLM's) stops them
            model.close()
    if summary is not None:
        for name, entry in summary["tasks"].items():
            official = entry["official"]["overall"] if entry["official"] else None
            strict = entry["strict"]["overall"] if entry["strict"] else None
            print(f"{name}: official {official} strict {strict} ({entry['scored']} scored, {entry['skipped']} skipped)")
        print(f"wrote {args.out}/results.jsonl, summary.json, report.md")
