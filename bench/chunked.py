"""Peak activation memory of chunked prefill at 1k, 4k and 10k frames on a Qwen2.5-1.5B-wide LLM (issue 18).

Qwen2.5-1.5B's width and heads (hidden 1536, 12 heads, 2 KV heads of 128, MLP 8960) with random weights,
one decoder layer (activations are per layer: the layers run one after another on each chunk) and a
1,024-token vocabulary (the LM head sees one token). Each point runs in its own process and reads the
kernel's peak RSS (VmHWM, reset before the step). The last chunk of the prompt is the costliest one (its
queries see every key), so each point fills the KV cache with random keys and values for all earlier tokens
and runs that last chunk: its peak minus its own new keys and values is the activation memory, which must not
grow with the frames. `--check` also runs a whole chunked prefill at the first size (the same peak expected).

  python bench/chunked.py                          # 1,024 / 4,096 / 10,240 frames, chunks of 1,024 tokens
  python bench/chunked.py --chunk 4096 --check
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import date

import torch

TOKENS_PER_FRAME = 16
WIDTH = dict(hidden_size=1536, heads=12, kv_heads=2, intermediate=8960)


def build(layers: int):
    from hico.synthetic.checkpoints import random_model, tiny_official_config

    config = tiny_official_config(hidden_size=WIDTH["hidden_size"], layers=layers, heads=WIDTH["heads"],
                                  kv_heads=WIDTH["kv_heads"], vocab_size=1024)
    config["intermediate_size"] = WIDTH["intermediate"]
    return random_model(config, seed=0)


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def one(frames: int, chunk: int, layers: int, whole: bool) -> dict:
    """Peak RSS above the baseline while the last chunk (or, `whole`, the whole prompt) is prefilled."""
    from hico.model import prompt_cache

    torch.manual_seed(0)
    model = build(layers)
    tokens = frames * TOKENS_PER_FRAME
    d = model.config.hidden_size // WIDTH["heads"]
    kv_per_token = 2 * WIDTH["kv_heads"] * d * 4 * layers  # bytes, float32
    cache = prompt_cache(model.llm.config)
    new = tokens if whole else chunk
    with torch.inference_mode():
        hidden = torch.randn(1, new, model.config.hidden_size)
        if not whole:
            for index in range(layers):
                cache.layers[index].reserve(tokens)
                past = torch.randn(2, 1, WIDTH["kv_heads"], tokens - chunk, d)
                cache.layers[index].update(past[0], past[1])
                del past
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
        base = _status("VmRSS")
        model.run_layers(hidden, cache, range(layers), chunk, keep_all=False)
        peak = _status("VmHWM")
    return {"frames": frames, "tokens": tokens, "peak": peak - base, "new_kv": new * kv_per_token,
            "kv": tokens * kv_per_token, "whole": whole}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[1024, 4096, 10240])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="also a whole chunked prefill at the first size")
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.layers, args.whole)))
        return
    points = [(f, False) for f in args.frames] + ([(args.frames[0], True)] if args.check else [])
    rows = []
    for frames, whole in points:
        command = [sys.executable, __file__, "--one", str(frames), str(args.chunk), "--layers", str(args.layers)]
        out = subprocess.run(command + (["--whole"] if whole else []), check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{frames} frames{' (whole prefill)' if whole else ''}: peak above baseline "
              f"{row['peak'] / 2**20:.0f} MiB, new KV {row['new_kv'] / 2**20:.0f} MiB, "
              f"KV cache {row['kv'] / 2**20:.0f} MiB", flush=True)
    activations = [r["peak"] - r["new_kv"] for r in rows if not r["whole"]]
    lines = ["## Chunked prefill: activation memory at 1k-10k frames (issue 18)", "",
             f"Command: `python bench/chunked.py --chunk {args.chunk}{' --check' if args.check else ''}`. "
             f"Machine: {platform.machine()}, 2 CPU cores (shared), no GPU, torch {torch.__version__}, float32. "
             f"Date: {date.today().isoformat()}. LLM: Qwen2.5-1.5B width and heads (hidden 1536, 12 heads, 2 KV "
             f"heads, MLP 8960), random weights, {args.layers} decoder layer(s) (the layers run one after another "
             f"on each chunk, so activations do not add up over layers), 1,024-token vocabulary. Chunks of "
             f"{args.chunk} tokens. Each point: its own process; the KV cache filled with random keys and values "
             "for every token before the last chunk, then that chunk (whose queries see every key, the costliest) "
             "prefilled; peak RSS (VmHWM) above the RSS just before it. Activations = that peak minus the chunk's "
             "own new keys and values.", "",
             "| frames | visual tokens | KV cache MiB | peak above baseline MiB | activations MiB |",
             "|---|---|---|---|---|"]
    for r in rows:
        label = f"{r['frames']} (whole prefill)" if r["whole"] else str(r["frames"])
        lines.append(f"| {label} | {r['tokens']} | {r['kv'] / 2**20:.0f} | {r['peak'] / 2**20:.0f} | "
                     f"{(r['peak'] - r['new_kv']) / 2**20:.0f} |")
    spread = max(activations) / min(activations)
    lines += ["", f"Target: activation memory flat within 1.2x from {rows[0]['frames']} to "
              f"{max(args.frames)} frames: {spread:.2f}x, {'met' if spread <= 1.2 else 'NOT met'}. Unchunked, "
              f"the MLP alone would hold 3 x tokens x 8960 floats: "
              + ", ".join(f"{3 * r['tokens'] * 8960 * 4 / 2**30:.1f} GiB at {r['frames']} frames"
                          for r in rows if not r["whole"]) + "."]
    from ingest import write_doc

    write_doc("\n".join(lines) + "\n", "chunked")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
