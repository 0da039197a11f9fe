"""`hico chat`: answer questions about one video, once or in an interactive session with history."""

from __future__ import annotations

import argparse
import sys

from hico.cli import add_dropout_args, add_model_args, add_sampling_args, dropout_schedule, load_model, sampling_options
from hico.errors import CheckpointError


def cmd_chat(args: argparse.Namespace) -> None:
    from hico.generate import GenerationConfig  # torch comes with it: not at the top, so `hico --help` stays fast

    options = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
                                temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    dropout = dropout_schedule(args)
    sampling = sampling_options(args)
    model = load_model(args)
    if model.tokenizer is None:  # these checks come before the video is encoded, which can take minutes
        raise CheckpointError(f"{args.model or 'the embedded model'}: the checkpoint folder has no tokenizer "
                              "files (tokenizer.json or vocab.json + merges.txt); copy them from the released model")
    dropout = model.schedule(dropout)  # "default"/"model" as this checkpoint says; too deep a schedule fails here
    memory = model.encode_video(args.video, sampling, progress=True, cache_dir=args.cache, timeout=args.timeout,
                                autorotate=not args.no_autorotate, folder_fps=args.folder_fps,
                                max_replaced=args.max_replaced)

    def ask(question: str, history: list[tuple[str, str]]) -> str:
        answer = model.answer(memory, question, history, options, dropout=dropout, prefix_dir=args.cache,
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


def register(sub) -> None:
    chat = sub.add_parser("chat", help="answer questions about a video (interactive without a question)")
    chat.add_argument("video", help="video file, GIF, or folder of numbered frames")
    chat.add_argument("question", nargs="?", help="the question; leave out for an interactive session")
    add_model_args(chat)
    chat.add_argument("--max-new-tokens", type=int, default=1024)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--seed", type=int)
    chat.add_argument("--cache", help="folder that keeps encoded videos, and their prefilled prompt prefix, for reuse")
    add_dropout_args(chat)
    add_sampling_args(chat)
    chat.set_defaults(func=cmd_chat)
