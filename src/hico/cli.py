"""The `hico` command: argument parsing and dispatch only. Errors a user can cause print one line, exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from hico.errors import HicoError, OptionError

PREVIEW_ROWS = 8


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"hico: error: {message} (see `{self.prog} --help`)\n")


def _sampling_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (default: the official ~1 fps policy, 64 to 512 frames)")
    group.add_argument("--num-frames", type=int, help="exactly N frames, uniformly spread")
    group.add_argument("--fps", type=float, help="a target frame rate instead of a count")
    group.add_argument("--max-frames", type=int, help="never more than N frames")
    group.add_argument("--min-frames", type=int, help="official policies only: at least N frames")
    group.add_argument("--start", type=float, help="start of the time range, seconds")
    group.add_argument("--end", type=float, help="end of the time range, seconds")
    group.add_argument("--policy", help="an official policy as is: dynamic_fps1, middle or fpsX")
    group.add_argument("--local-num-frames", type=int, default=8,
                       help="official policies: frame counts are multiples of this (default 8)")
    reading = parser.add_argument_group("reading")
    reading.add_argument("--no-autorotate", action="store_true",
                         help="ignore the display rotation (as the official reader does)")
    reading.add_argument("--timeout", type=float, default=30.0, help="seconds without decoder progress before giving up")
    reading.add_argument("--max-replaced", type=float, default=0.1,
                         help="largest share of undecodable samples replaced by neighbours before failing")
    reading.add_argument("--folder-fps", type=float, default=1.0, help="frame rate assumed for frame folders")
    reading.add_argument("--strategy", choices=("auto", "seek", "sequential"), default="auto",
                         help="how to reach the sampled frames (auto: from the keyframe layout)")


def _options(args: argparse.Namespace):
    from hico.video.sampling import SamplingOptions

    if args.policy is not None:
        if args.num_frames is not None or args.fps is not None:
            raise OptionError("--policy cannot be combined with --num-frames or --fps")
        defaults = SamplingOptions()
        min_frames = args.min_frames if args.min_frames is not None else (
            defaults.min_num_frames if args.policy == "dynamic_fps1" else 1)
        return SamplingOptions(policy=args.policy, max_num_frames=args.max_frames or defaults.max_num_frames,
                               min_num_frames=min_frames, local_num_frames=args.local_num_frames,
                               start=args.start, end=args.end)
    if args.min_frames is not None:
        raise OptionError("--min-frames applies to official policies only; add --policy dynamic_fps1")
    return SamplingOptions.plain(num_frames=args.num_frames, fps=args.fps, max_frames=args.max_frames,
                                 start=args.start, end=args.end)


def _open(args: argparse.Namespace):
    from hico.video.reader import Video

    return Video(args.video, timeout=args.timeout, autorotate=not args.no_autorotate, folder_fps=args.folder_fps,
                 max_replaced=args.max_replaced)


def cmd_probe(args: argparse.Namespace) -> None:
    from hico.video.reader import CLIP_FRAMES, TOKENS_PER_FRAME

    options = _options(args)
    with _open(args) as video:
        plan = video.plan(options)
        access = video.access_plan(plan, args.strategy)
        times = video.times(plan)
        info = video.info
    tokens = TOKENS_PER_FRAME * plan.num_frames
    clips = -(-plan.num_frames // CLIP_FRAMES)
    if args.json:
        print(json.dumps({"info": asdict(info), "plan": {
            "policy": options.policy, "indices": list(plan.indices), "times": times, "duration": plan.duration,
            "time_msg": plan.time_msg, "visual_tokens": tokens, "clips": clips, "access": access.strategy,
            "frames_to_decode": access.frames_to_decode}}, indent=1))
        return
    vfr = "variable" if info.variable_frame_rate else "constant"
    keyframes = "unknown" if info.keyframes is None else info.keyframes
    lines = [
        f"video      {info.path} ({info.kind}: {info.container}, {info.codec})",
        f"size       {info.width}x{info.height}, display rotation {info.rotation} degrees",
        f"frames     {info.num_frames} ({info.frame_count}), {info.fps:.3f} fps average ({vfr} frame rate), "
        f"{info.duration:.2f} s, {keyframes} keyframes",
        f"sampling   {options.policy}: {plan.num_frames} frames"
        + (f" from {options.start or 0:g} s to {options.end if options.end is not None else 'end'}"
           + (" s" if options.end is not None else "") if options.has_clip else ""),
        f"access     {access.strategy} (about {access.frames_to_decode} frames to decode)",
        f"time msg   {plan.time_msg.strip()!r}",
        f"tokens     {tokens} visual tokens ({TOKENS_PER_FRAME} per frame, {clips} clips of {CLIP_FRAMES} frames)",
    ]
    lines += [f"note       {note}" for note in info.notes]
    lines.append("   #     index    time (s)")
    rows = list(enumerate(zip(plan.indices, times)))
    if len(rows) > 2 * PREVIEW_ROWS and not args.all:
        shown = rows[:PREVIEW_ROWS] + [None] + rows[-PREVIEW_ROWS:]
    else:
        shown = rows
    for row in shown:
        if row is None:
            lines.append(f"   ... {len(rows) - 2 * PREVIEW_ROWS} more (--all lists every frame, --json too)")
            continue
        position, (index, time) = row
        lines.append(f"{position:4d}  {index:8d}  {time:10.3f}")
    print("\n".join(lines))


def cmd_frames(args: argparse.Namespace) -> None:
    from PIL import Image

    options = _options(args)
    if args.size and args.size < 16:
        raise OptionError(f"--size must be 0 (original size) or at least 16 pixels, got {args.size}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError(f"{out} already exists and is not an empty folder; choose a new --out folder "
                          "(hico never overwrites files)")
    with _open(args) as video:
        plan = video.plan(options)
        out.mkdir(parents=True, exist_ok=True)
        written = 0
        for frame in video.frames(plan, args.size or None, strategy=args.strategy, progress=True):
            name = f"frame_{frame.position:05d}_index{frame.index:07d}_{frame.time:08.3f}s.png"
            Image.fromarray(frame.pixels).save(out / name)
            written += 1
        replaced = video.report.replaced
    size = f"{args.size}x{args.size}" if args.size else "original size"
    print(f"wrote {written} frames ({size}) to {out}"
          + (f"; {replaced} undecodable samples were replaced by neighbours" if replaced else ""))


def _dropout(args: argparse.Namespace):
    from hico.compress import DropSchedule

    if args.dropout is None:
        if args.dropout_layers or args.dropout_ratios:
            raise OptionError("--dropout-layers/--dropout-ratios need --dropout TYPE (for example uniform0_attention)")
        return None
    if args.dropout == "off":
        return DropSchedule()
    try:
        layers = tuple(int(x) for x in args.dropout_layers.split(",")) if args.dropout_layers else ()
        ratios = tuple(float(x) for x in args.dropout_ratios.split(",")) if args.dropout_ratios else ()
    except ValueError as exc:
        raise OptionError(f"--dropout-layers takes integers and --dropout-ratios numbers, comma-separated ({exc})")
    return DropSchedule(args.dropout, layers, ratios)


def cmd_chat(args: argparse.Namespace) -> None:
    from hico.generate import GenerationOptions

    options = GenerationOptions(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
                                temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    dropout = _dropout(args)
    sampling = _options(args)
    model = _load_model(args)
    if dropout is not None:
        dropout.check_depth(model.model.config.llm["num_hidden_layers"])
    memory = model.encode_video(args.video, sampling, progress=True, cache_dir=args.cache, timeout=args.timeout,
                                autorotate=not args.no_autorotate, folder_fps=args.folder_fps,
                                max_replaced=args.max_replaced)

    def ask(question: str, history: list[tuple[str, str]]) -> str:
        answer = model.answer(memory, question, history, options, dropout=dropout,
                              on_text=lambda piece: print(piece, end="", flush=True))
        print(flush=True)
        return answer

    if args.question is not None:
        ask(args.question, [])
        return
    print(f"{memory.num_frames} frames encoded; ask about the video (an empty line or Ctrl-D ends)", file=sys.stderr)
    history: list[tuple[str, str]] = []
    while True:
        try:
            question = input("you> ").strip()
        except EOFError:
            break
        if not question or question in ("exit", "quit"):
            break
        history.append((question, ask(question, history)))


def cmd_sample_video(args: argparse.Namespace) -> None:
    from hico.synth import sample_video

    out = Path(args.out)
    if out.exists():
        print(f"{out} exists; keeping it")
        return
    if not args.seconds > 0:
        raise OptionError(f"--seconds must be positive, got {args.seconds}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    if args.picture:
        from hico.synthqa import write_demo_video

        spec, first = write_demo_video(tmp, frames=int(args.seconds), seed=args.seed)
        tmp.replace(out)
        print(f"wrote {out}: {int(args.seconds)} frames at 1 fps, a {spec.colour} {spec.shape} picture at frames "
              f"{first}-{first + 3}")
        return
    sample_video(tmp, seconds=args.seconds)
    tmp.replace(out)
    print(f"wrote {out}")


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


def _load_model(args: argparse.Namespace):
    import torch

    import hico

    from hico.embedded import embedded_path

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return hico.load(args.model or embedded_path(), dtype=dtypes[args.dtype], device=args.device)


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

    options = RunOptions(dropout=args.dropout, limit=args.limit, answer=args.answer)
    load_benchmark(args.bench)  # a wrong folder fails before a large model is loaded
    results = run(args.bench, _load_model(args), args.results, options)
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


def _niah_parser(sub) -> None:
    niah = sub.add_parser("niah", help="needle-in-a-video-haystack benchmark: needles, build, run, report")
    steps = niah.add_subparsers(dest="step", required=True, parser_class=_Parser)

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
    run.add_argument("--model", help="checkpoint folder (official VideoChat-Flash layout); default: the embedded "
                                     "toy model")
    run.add_argument("--results", help="results JSONL (default: results-<model>.jsonl in the benchmark folder)")
    run.add_argument("--dropout", choices=("off", "model"), default="off",
                     help="in-LLM dropout: off as the official NIAH, or the checkpoint's schedule")
    run.add_argument("--limit", type=int, help="answer at most N new cases (a later run resumes)")
    run.add_argument("--answer", choices=("letter", "open"), default="letter",
                     help="letter: the official protocol (the option letter); open: ask without the options and "
                          "compare the generated answer with the right option's text")
    run.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    run.add_argument("--device", default="cpu")
    run.add_argument("--no-report", action="store_true", help="skip writing the report")
    run.set_defaults(func=cmd_niah_run)

    rep = steps.add_parser("report", help="heat-map PNG and Markdown tables from the results")
    rep.add_argument("bench", help="benchmark folder")
    rep.add_argument("--results", help="results JSONL (default: the only one in the benchmark folder)")
    rep.add_argument("--out", help="folder for the report (default: the benchmark folder)")
    rep.set_defaults(func=cmd_niah_report)


def cmd_train(args: argparse.Namespace) -> None:
    from hico.train.run import train
    from hico.train.stages import load_stage, parse_overrides

    config = load_stage(args.stage, parse_overrides(args.set or []))
    result = train(args.model, args.data, args.output, config, resume=args.resume)
    print(f"trained {result.steps} steps; checkpoint in {result.output}")


def cmd_merge_lora(args: argparse.Namespace) -> None:
    from hico.train.lora import merge_checkpoint

    print(f"wrote {merge_checkpoint(args.checkpoint, args.out)}")


def cmd_synth_qa(args: argparse.Namespace) -> None:
    from hico.synthqa import HELDOUT_PHOTOS, TRAIN_PHOTOS, VARIED_PHOTOS, TaskOptions, write_task_set

    photos = HELDOUT_PHOTOS if args.heldout else VARIED_PHOTOS if args.varied else TRAIN_PHOTOS
    options = TaskOptions(videos=args.videos, min_frames=args.min_frames, max_frames=args.max_frames,
                          size=args.size, photos=photos, seed=args.seed, augment=args.augment,
                          haystacks=tuple(args.haystacks.split(",")), kinds=tuple(args.kinds.split(",")),
                          attributes=tuple(args.attributes.split(",")))
    print(f"wrote {write_task_set(args.out, options)}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hico", description="Long-video understanding with hierarchical token compression.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    probe = sub.add_parser("probe", help="show a video's metadata and sampling plan")
    probe.add_argument("video", help="video file, GIF, or folder of numbered frames")
    _sampling_args(probe)
    probe.add_argument("--all", action="store_true", help="list every sampled frame")
    probe.add_argument("--json", action="store_true", help="print JSON")
    probe.set_defaults(func=cmd_probe)

    frames = sub.add_parser("frames", help="write the sampled frames, as the model sees them, as PNG")
    frames.add_argument("video", help="video file, GIF, or folder of numbered frames")
    frames.add_argument("--out", required=True, help="new or empty folder for the PNG files")
    frames.add_argument("--size", type=int, default=224, help="square size in pixels (224 or 448; 0 = original)")
    _sampling_args(frames)
    frames.set_defaults(func=cmd_frames)

    chat = sub.add_parser("chat", help="answer questions about a video (interactive without a question)")
    chat.add_argument("video", help="video file, GIF, or folder of numbered frames")
    chat.add_argument("question", nargs="?", help="the question; leave out for an interactive session")
    chat.add_argument("--model", help="checkpoint folder (official VideoChat-Flash layout); default: the embedded "
                                      "toy model")
    chat.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    chat.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    chat.add_argument("--max-new-tokens", type=int, default=1024)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--seed", type=int)
    chat.add_argument("--cache", help="folder that keeps encoded videos for reuse")
    chat.add_argument("--dropout", choices=("off", "uniform", "attention", "uniform0_attention", "uniform1_attention"),
                      help="in-LLM visual-token dropout (default: as the checkpoint config says)")
    chat.add_argument("--dropout-layers", help="layer numbers after which to drop, e.g. 4,18")
    chat.add_argument("--dropout-ratios", help="kept fractions, one more than layers, e.g. 1,0.75,0.25")
    _sampling_args(chat)
    chat.set_defaults(func=cmd_chat)

    sample = sub.add_parser("sample-video", help="write a synthetic test video (H.264, 640x360)")
    sample.add_argument("out", help="output .mp4 path (kept if it exists)")
    sample.add_argument("--seconds", type=float, default=90.0)
    sample.add_argument("--picture", action="store_true",
                        help="a 64x64 1 fps video with one picture (a coloured shape) that the embedded model reads")
    sample.add_argument("--seed", type=int, default=0, help="which picture and scenes (with --picture)")
    sample.set_defaults(func=cmd_sample_video)
    _niah_parser(sub)

    qa = sub.add_parser("synth-qa", help="write seeded synthetic training videos with 4-option questions")
    qa.add_argument("out", help="folder for videos/ and data.json (LLaVA-style, read by hico train)")
    qa.add_argument("--videos", type=int, default=100)
    qa.add_argument("--min-frames", type=int, default=16, help="frames per video at 1 fps, multiples of 4")
    qa.add_argument("--max-frames", type=int, default=128)
    qa.add_argument("--size", type=int, default=64, help="frame side in pixels")
    qa.add_argument("--kinds", default="needle,attribute,count,order")
    qa.add_argument("--haystacks", default="motion,photo",
                    help="motion, photo (scikit-image sample photos), shots (a cut between motion and photo pans)")
    photos = qa.add_mutually_exclusive_group()
    photos.add_argument("--heldout", action="store_true", help="use the held-out photos (evaluation sets)")
    photos.add_argument("--varied", action="store_true", help="use the longer list of training photos")
    qa.add_argument("--augment", action="store_true", help="randomly flip, turn and recolour every photo")
    qa.add_argument("--attributes", default="colour,shape,symbol", help="what needle questions may ask about")
    qa.add_argument("--seed", type=int, default=0)
    qa.set_defaults(func=cmd_synth_qa)

    train = sub.add_parser("train", help="train one stage (1-4) from a checkpoint on conversation data")
    train.add_argument("--stage", required=True, help="1, 2, 3, 4, or a YAML file of training settings")
    train.add_argument("--data", required=True, help="mixture YAML (official stage format) or conversation JSON/JSONL")
    train.add_argument("--model", required=True, help="checkpoint folder to start from (official layout)")
    train.add_argument("--output", required=True, help="folder for checkpoints and the final model")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a setting, e.g. --set lr=2e-5 --set max_steps=100 --set lora.rank=8")
    train.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    train.set_defaults(func=cmd_train)

    merge = sub.add_parser("merge-lora", help="merge a LoRA training checkpoint into a plain checkpoint")
    merge.add_argument("checkpoint", help="folder with adapter_model.safetensors")
    merge.add_argument("--out", required=True, help="new folder for the merged checkpoint")
    merge.set_defaults(func=cmd_merge_lora)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HicoError as exc:
        print(f"hico: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hico: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not a user error: still one line, with how to report it
        print(f"hico: internal error: {type(exc).__name__}: {exc} (please report it with the command you ran)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
