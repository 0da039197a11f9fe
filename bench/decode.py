"""Decoding speed: ms per new token of this tree against another commit (default: the main before the engine
of issue 23), side by side in one run.

Both trees answer through the public API (`hico.load(...).answer`), which every entry point used before the
engine and which wraps `Hico.generate` now: greedy, stop tokens switched off so that every answer has its
full length, the video's prefix kept (as for any second question). ms/token = (time of an answer of 1 + N
tokens - time of an answer of 1 token) / N, the best of `--repeats`; the two trees alternate in fresh
processes round by round, so load from other users of the machine reaches both alike.

Models: the embedded toy model (4 layers, width 128), and a real-width reduced-depth model (Qwen2.5-1.5B: width
1536, 12 heads, 2 KV heads, MLP 8960; random weights, `--layers` decoder layers) whose vocabulary is cut in
the same proportion as its depth (151,936 x layers / 28), so that the LM head weighs what it weighs in the
28-layer model (with the full vocabulary and 4 layers, the head would be 55% of the weights read per token,
against 15% in the real model). Each with a video of `--frames` frames of random visual tokens (16 a frame).
On a CPU, decoding a real-width model is bound by reading the weights and the KV cache: what the engine
saves (copying every layer's cache at every token, a dozen finiteness checks per token) grows with the video.

  python bench/decode.py                          # against 80fcaee (main before issue 23)
  python bench/decode.py --base HEAD~3 --frames 256 --real-frames 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
BASE = "80fcaee"  # main before issue 23's engine
QUESTION = "Describe the picture in the video."


def real_width_checkpoint(layers: int) -> Path:
    """A random checkpoint with the Qwen2.5-1.5B LLM widths (written once, by this tree)."""
    from hico.synthetic.checkpoints import tiny_official_config, write_random_checkpoint

    folder = CACHE / f"decode-qwen2.5-1.5b-{layers}l"
    if not (folder / "model.safetensors").exists():
        vocab = 151936 * layers // 28 // 64 * 64
        config = tiny_official_config(hidden_size=1536, layers=layers, heads=12, kv_heads=2, vocab_size=vocab)
        config["intermediate_size"] = 8960
        write_random_checkpoint(folder, config, seed=0)
    return folder


def measure(model_path: str, frames: int, tokens: int, repeats: int, device: str, dtype: str) -> dict:
    """In this process (whichever tree is on sys.path): ms per token of `answer`, and what it ran."""
    import torch

    import hico
    from hico.generate import GenerationOptions
    from hico.memory import VideoMemory

    torch.manual_seed(0)
    if device == "cpu":
        torch.set_num_threads(2)
    model = hico.load(model_path, dtype=getattr(torch, dtype), device=device)
    hidden = model.model.config.hidden_size
    memory = VideoMemory(tokens=torch.randn(16 * frames, hidden) * 0.02, indices=list(range(frames)),
                         times=[float(i) for i in range(frames)], time_msg="", duration=float(frames),
                         source="random", key="")
    model.stop_ids = lambda: set()  # every answer runs to max_new_tokens
    model.answer(memory, QUESTION, options=GenerationOptions(max_new_tokens=2))  # prefix kept, warm

    def timed(new: int) -> float:
        start = time.perf_counter()
        model.answer(memory, QUESTION, options=GenerationOptions(max_new_tokens=new))
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one = min(timed(1) for _ in range(repeats))
    full = min(timed(1 + tokens) for _ in range(repeats))
    return {"ms_per_token": 1000 * (full - one) / tokens, "first_token_s": one, "hico": hico.__file__}


def run_tree(src: Path, model: str, frames: int, tokens: int, repeats: int, device: str, dtype: str) -> dict:
    command = [sys.executable, __file__, "--one", model, "--frames", str(frames), "--tokens", str(tokens),
               "--repeats", str(repeats), "--device", device, "--dtype", dtype]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if not row["hico"].startswith(str(src)):
        raise RuntimeError(f"imported hico from {row['hico']}, not {src}")
    return row


def base_tree(commit: str) -> Path:
    """A worktree of `commit` under build/ (made once)."""
    folder = ROOT / "build" / f"bench-base-{commit}"
    if not folder.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], check=True, cwd=ROOT,
                       capture_output=True)
    return folder / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--frames", type=int, nargs="+", default=[256, 1024], help="embedded model")
    parser.add_argument("--real-frames", type=int, nargs="+", default=[512, 1024, 4096], help="real-width model")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--out", type=Path, default=CACHE / "decode.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.frames[0], args.tokens, args.repeats, args.device, args.dtype)))
        return
    from hico.embedded import embedded_path

    models = {"embedded toy model (4 layers, width 128)": (str(embedded_path()), args.frames),
              f"Qwen2.5-1.5B width, {args.layers} layers": (str(real_width_checkpoint(args.layers)),
                                                             args.real_frames)}
    trees = {"base": base_tree(args.base), "this tree": ROOT / "src"}
    rows = []
    for name, (path, lengths) in models.items():
        for frames in lengths:
            best = {}
            for _ in range(args.rounds):
                for tree, src in trees.items():
                    row = run_tree(src, path, frames, args.tokens, args.repeats, args.device, args.dtype)
                    best[tree] = min(best.get(tree, float("inf")), row["ms_per_token"])
            rows.append((name, frames, best["base"], best["this tree"]))
            print(rows[-1], flush=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip() or "(no git)"
    if args.device == "cpu":
        machine = (f"{platform.machine()}, 2 CPU cores (shared; load average {os.getloadavg()[0]:.1f} at the end), "
                   f"torch 2 threads, {args.dtype}")
    else:
        import torch

        machine = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}"
    lines = ["## Decoding: ms per token, the engine against the main before it (issue 23)", "",
             f"Command: `python bench/decode.py --base {args.base} --frames {' '.join(map(str, args.frames))} "
             f"--real-frames {' '.join(map(str, args.real_frames))} --tokens {args.tokens} --device {args.device} "
             f"--dtype {args.dtype}`. Date: {date.today()}. Machine: {machine}. Base: "
             f"{args.base}; this tree: {head} (plus uncommitted changes, if any). Each cell: the best of "
             f"{args.rounds} rounds x {args.repeats} repeats, the two trees alternating in fresh processes; "
             f"ms/token = (an answer of 1 + {args.tokens} tokens - an answer of 1 token) / {args.tokens}, "
             "greedy, stop tokens off, the video's prefix kept.", "",
             "| model | frames | base ms/token | this tree ms/token | speed-up |", "|---|---:|---:|---:|---:|"]
    for name, frames, base, new in rows:
        lines.append(f"| {name} | {frames:,} | {base:.2f} | {new:.2f} | {base / new:.2f}x |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
