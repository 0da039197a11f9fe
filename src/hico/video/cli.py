"""`hico probe` and `hico frames`: what hico would read from a video, before any model is loaded."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from hico.atomic import atomic_folder
from hico.cli import add_sampling_args, sampling_options
from hico.clips import FRAMES_PER_CLIP, TOKENS_PER_FRAME
from hico.errors import OptionError

PREVIEW_ROWS = 8


def _open(args: argparse.Namespace):
    from hico.video.reader import Video  # torch comes with it: not at the top, so `hico --help` stays fast

    return Video(args.video, timeout=args.timeout, autorotate=not args.no_autorotate, folder_fps=args.folder_fps,
                 max_replaced=args.max_replaced, count_frames=getattr(args, "count_frames", False))




def cmd_probe(args: argparse.Namespace) -> None:
    options = sampling_options(args)
    with _open(args) as video:
        plan = video.plan(options)
        access = video.access_plan(plan, args.strategy)
        times = video.times(plan)
        info = video.info
    tokens = TOKENS_PER_FRAME * plan.num_frames
    clips = -(-plan.num_frames // FRAMES_PER_CLIP)
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
        f"tokens     {tokens} visual tokens ({TOKENS_PER_FRAME} per frame, "
        f"{clips} clips of {FRAMES_PER_CLIP} frames)",
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
    options = sampling_options(args)
    if args.size and args.size < 16:
        raise OptionError(f"--size must be 0 (original size) or at least 16 pixels, got {args.size}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError(f"{out} already exists and is not an empty folder; choose a new --out folder "
                          "(hico never overwrites files)")
    # the frames go to a temporary folder that becomes --out only when all are written: a video that fails
    # half-way (damaged data, a decoder hang) leaves no partial output
    with _open(args) as video, atomic_folder(out) as staging:
        plan = video.plan(options)
        written = 0
        for frame in video.frames(plan, args.size or None, strategy=args.strategy, progress=True):
            name = f"frame_{frame.position:05d}_index{frame.index:07d}_{frame.time:08.3f}s.png"
            Image.fromarray(frame.pixels).save(staging / name)
            written += 1
        replaced = video.report.replaced
        stats = video.report.stats
    size = f"{args.size}x{args.size}" if args.size else "original size"
    print(f"wrote {written} frames ({size}) to {out}"
          + (f"; {replaced} undecodable samples were replaced by neighbours" if replaced else "")
          + (f"; {stats.concealed} were repaired by the decoder's error concealment" if stats.concealed else "")
          + (f"; the decoder rejected {stats.errors} damaged packets" if stats.errors else ""))


def register(sub) -> None:
    probe = sub.add_parser("probe", help="show a video's metadata and sampling plan")
    probe.add_argument("video", help="video file, GIF, or folder of numbered frames")
    add_sampling_args(probe)
    probe.add_argument("--all", action="store_true", help="list every sampled frame")
    probe.add_argument("--json", action="store_true", help="print JSON")
    probe.add_argument("--count-frames", action="store_true",
                       help="decode every frame to count them, as ffprobe -count_frames does (slower; by default "
                            "frames are counted from the packets, which is exact unless the file is damaged)")
    probe.set_defaults(func=cmd_probe)

    frames = sub.add_parser("frames", help="write the sampled frames, as the model sees them, as PNG")
    frames.add_argument("video", help="video file, GIF, or folder of numbered frames")
    frames.add_argument("--out", required=True, help="new or empty folder for the PNG files")
    frames.add_argument("--size", type=int, default=224, help="square size in pixels (224 or 448; 0 = original)")
    add_sampling_args(frames)
    frames.set_defaults(func=cmd_frames)
