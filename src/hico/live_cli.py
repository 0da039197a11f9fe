"""`hico live SOURCE`: watch a file at its real rate (`--fast`: as fast as it decodes), a capture device or a network
stream, and answer the questions typed meanwhile about everything seen so far."""

from __future__ import annotations

import argparse
import sys
import threading

from hico.cli import add_model_args, load_model
from hico.errors import HicoError, OptionError


def cmd_live(args: argparse.Namespace) -> None:
    from hico.generate import GenerationConfig  # torch comes with it: not at the top, so `hico --help` stays fast

    options = {}
    for pair in args.option or ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise OptionError(f"--option {pair!r}: write KEY=VALUE, e.g. video_size=640x480")
        options[key] = value
    model = load_model(args)
    live = model.live(fps=args.fps, budget_tokens=args.budget, dropout="off")
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    stop, failed = threading.Event(), []

    def ingest() -> None:
        try:
            live.push_video(args.source, realtime=not args.fast, stop=stop, format=args.format, options=options)
        except HicoError as exc:
            failed.append(exc)

    reader = threading.Thread(target=ingest, daemon=True)
    reader.start()
    if args.wait:
        reader.join()
    if failed:
        raise failed[0]
    print(f"watching {args.source} at {args.fps:g} fps; ask about it (an empty line or Ctrl-D ends)",
          file=sys.stderr)
    history: list[tuple[str, str]] = []
    try:
        while True:
            try:
                question = input("you> " if sys.stdin.isatty() else "").strip()
            except EOFError:
                break
            if not question or question in ("exit", "quit"):
                break
            if failed:
                raise failed[0]
            seen = f"[{live.seconds:.0f} s seen, {live.kept_tokens} visual tokens]"
            print(seen, file=sys.stderr)
            answer = live.generate(question, history, config=config,
                                   on_token=lambda piece: print(piece, end="", flush=True))
            print(flush=True)
            history.append((question, answer.text))
    finally:
        stop.set()
        reader.join(timeout=30)  # a source that failed to open says so, even if no question came
    if failed:
        raise failed[0]


def register(sub) -> None:
    live = sub.add_parser("live", help="watch a live source (file, capture device, stream URL) and answer questions "
                                       "about it while it plays")
    live.add_argument("source", help="video file, device (e.g. /dev/video0 with --format v4l2) or stream URL")
    live.add_argument("--fps", type=float, default=1.0, help="frames taken per second of the stream (default 1)")
    live.add_argument("--budget", type=int, help="visual tokens kept at most (default: all; needed past the "
                                                  "model's position range, about 70 minutes at 1 fps)")
    live.add_argument("--fast", action="store_true", help="a file as fast as it decodes, not at its real rate")
    live.add_argument("--wait", action="store_true", help="take the whole source before the first question")
    live.add_argument("--format", help="PyAV/FFmpeg input format (v4l2, avfoundation, dshow, ...)")
    live.add_argument("--option", action="append", metavar="KEY=VALUE", help="an FFmpeg input option (repeatable)")
    live.add_argument("--max-new-tokens", type=int, default=512)
    add_model_args(live)
    live.set_defaults(func=cmd_live)
