"""`hico sample-video` and `hico synth-qa`: synthetic videos and training tasks from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.errors import OptionError
from hico.synthetic.tasks import (HELDOUT_PHOTOS, TRAIN_PHOTOS, VARIED_PHOTOS, TaskOptions, write_demo_video,
                                  write_task_set)
from hico.synthetic.videos import sample_video


def cmd_sample_video(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists():
        print(f"{out} exists; keeping it")
        return
    if not args.seconds > 0:
        raise OptionError(f"--seconds must be positive, got {args.seconds}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    if args.picture:
        spec, first = write_demo_video(tmp, frames=int(args.seconds), seed=args.seed)
        tmp.replace(out)
        print(f"wrote {out}: {int(args.seconds)} frames at 1 fps, a {spec.colour} {spec.shape} picture at frames "
              f"{first}-{first + 3}")
        return
    sample_video(tmp, seconds=args.seconds)
    tmp.replace(out)
    print(f"wrote {out}")


def cmd_synth_qa(args: argparse.Namespace) -> None:
    photos = HELDOUT_PHOTOS if args.heldout else VARIED_PHOTOS if args.varied else TRAIN_PHOTOS
    options = TaskOptions(videos=args.videos, min_frames=args.min_frames, max_frames=args.max_frames,
                          size=args.size, photos=photos, seed=args.seed, augment=args.augment,
                          haystacks=tuple(args.haystacks.split(",")), kinds=tuple(args.kinds.split(",")),
                          attributes=tuple(args.attributes.split(",")))
    print(f"wrote {write_task_set(args.out, options)}")


def register(sub) -> None:
    sample = sub.add_parser("sample-video", help="write a synthetic test video (H.264, 640x360)")
    sample.add_argument("out", help="output .mp4 path (kept if it exists)")
    sample.add_argument("--seconds", type=float, default=90.0)
    sample.add_argument("--picture", action="store_true",
                        help="a 64x64 1 fps video with one picture (a coloured shape) that the embedded model reads")
    sample.add_argument("--seed", type=int, default=0, help="which picture and scenes (with --picture)")
    sample.set_defaults(func=cmd_sample_video)

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
