"""The released models' real sizes (issue 18): UMT-L tower + merge at 224 and 448 px, and prefill at the
Qwen2.5-1.5B and Qwen2-7B shapes, with random weights and reduced depth, extrapolated per layer.

Tower: UMT-L blocks (width 1024, 16 heads, patch 16; the released checkpoints run 23 of 24 blocks), timed with
1 and 2 blocks on a few 4-frame clips; one block's cost (the difference) times 23 plus the rest (patches, merge
to 64 tokens per clip) gives frames per second. Clips are encoded in batches of 8 whatever the video length,
so this rate and the peak memory hold for any number of frames.
LLM: one decoder layer of the real width and heads (and a 1,024-token vocabulary: the LM head sees one token)
prefills the prompt of N frames (16 visual tokens each) in chunks of 4,096; the whole model's time is 28 times
that layer's (embedding, final norm and LM head on one token are left out). With dropout, the released
schedule (text-guided after layers 8, 16 and 24, keeping 1/2, 1/4 and 1/8) runs 8 layers on all the tokens, 8
on half, 8 on a quarter and 4 on an eighth: each stage's layer is timed at its own length.
Peak memory: RSS above the loaded model (VmHWM) on CPU, max allocated on CUDA; the prefill peak is for one
layer, and the KV cache of all 28 layers per frame is stated beside it (computed).

  python bench/real_shapes.py                                     # CPU, float32, 64 and 256 frames
  python bench/real_shapes.py --device cuda --dtype bfloat16 --frames 1024 10240   # unchanged on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from hico.compress import merge_clip_tokens
from hico.model import IMAGE_TOKEN_INDEX
from hico.synthetic.checkpoints import random_model, tiny_official_config
from hico.vision.umt import UMTConfig, UMTEncoder

RESULTS = Path(__file__).resolve().parent / ".cache" / "real_shapes.json"  # rows by key: reruns add or update
LLMS = {"Qwen2.5-1.5B": dict(hidden_size=1536, heads=12, kv_heads=2, intermediate=8960),
        "Qwen2-7B": dict(hidden_size=3584, heads=28, kv_heads=4, intermediate=18944)}
LLM_LAYERS, TOWER_BLOCKS = 28, 23
TEXT_BEFORE, TEXT_AFTER = 14, 30


class Peak:
    """Peak memory above the current use: VmHWM on CPU, max allocated on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            open("/proc/self/clear_refs", "w").write("5")
            self.base = _status("VmRSS")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.bytes = _status("VmHWM") - self.base
        self.seconds = time.perf_counter() - self.start


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def tower_row(size: int, clips: int, device: torch.device, dtype: torch.dtype) -> dict:
    times, peak = [], 0
    batch = min(clips, 8)  # hico encodes 8 clips per tower call
    batches = -(-clips // batch)
    for blocks in (1, 2):
        torch.manual_seed(0)
        tower = UMTEncoder(UMTConfig(num_layers=blocks, image_size=size)).to(device, dtype).eval()
        tower.reset_buffers(device)
        pixels = torch.randn(batch, 4, 3, size, size, device=device, dtype=dtype)
        with torch.inference_mode():
            merge_clip_tokens(tower(pixels[:1]), 64)  # warm-up
            with Peak(device) as measured:
                for _ in range(batches):
                    merge_clip_tokens(tower(pixels), 64)
        times.append(measured.seconds)
        peak = max(peak, measured.bytes)
    per_block = max(times[1] - times[0], 0.0)
    full = times[0] - per_block + TOWER_BLOCKS * per_block
    frames = 4 * batch * batches
    return {"kind": "tower", "size": size, "frames": frames, "fps": frames / full, "measured_s": times,
            "peak": peak, "note": f"{frames} frames, 1 and 2 blocks"}


def llm_row(name: str, frames: int, device: torch.device, dtype: torch.dtype, dropout: bool) -> dict:
    shape = LLMS[name]
    config = tiny_official_config(hidden_size=shape["hidden_size"], layers=1, heads=shape["heads"],
                                  kv_heads=shape["kv_heads"], vocab_size=1024)
    config["intermediate_size"] = shape["intermediate"]
    model = random_model(config, seed=0).to(device, dtype)
    model.reset_buffers()
    visual = 16 * frames
    stages = [(8, 1.0), (8, 0.5), (8, 0.25), (4, 0.125)] if dropout else [(LLM_LAYERS, 1.0)]
    total, peak = 0.0, 0
    for layers, ratio in stages:
        ids = torch.randint(3, 1000, (TEXT_BEFORE + 1 + TEXT_AFTER,))
        ids[TEXT_BEFORE] = IMAGE_TOKEN_INDEX
        tokens = torch.randn(int(visual * ratio), shape["hidden_size"], device=device, dtype=dtype)
        with torch.inference_mode():
            embeds, span = model.embed(ids, tokens)
            with Peak(device) as measured:
                model.prefill(embeds, span, chunk=4096)
        total += layers * measured.seconds
        peak = max(peak, measured.bytes)
    d = shape["hidden_size"] // shape["heads"]
    kv_per_frame = 16 * 2 * shape["kv_heads"] * d * torch.finfo(dtype).bits // 8 * LLM_LAYERS
    return {"kind": "llm", "llm": name, "frames": frames, "dropout": dropout, "tokens_per_s": visual / total,
            "seconds": total, "peak_per_frame": peak / frames, "kv_per_frame": kv_per_frame}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--llms", nargs="+", choices=tuple(LLMS), default=list(LLMS))
    parser.add_argument("--sizes", type=int, nargs="+", choices=(224, 448), default=[224, 448])
    parser.add_argument("--tower-clips", type=int, default=2, help="4-frame clips timed through the tower")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--skip-tower", action="store_true")
    parser.add_argument("--table", action="store_true", help="only rewrite the table from the kept rows")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.table:
        write(saved, args)
        return

    def keep(key: str, row: dict) -> None:
        saved[f"{machine} {args.dtype} {key}"] = row | {"machine": machine, "dtype": args.dtype}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(saved, indent=1))
        print(key, {k: v for k, v in row.items() if k != "kind"}, flush=True)

    if not args.skip_tower:
        for size in args.sizes:
            keep(f"tower {size}", tower_row(size, args.tower_clips, device, dtype))
    for name in args.llms:
        for frames in args.frames:
            for dropout in (False, True):
                keep(f"llm {name} {frames} {dropout}", llm_row(name, frames, device, dtype, dropout))
    write(saved, args)


def write(saved: dict, args: argparse.Namespace) -> None:
    rows = list(saved.values())
    gpu = any(not r["machine"].endswith(" CPU") for r in rows)
    missing = "" if gpu else ("**No GPU was lent to this session: the GPU columns are empty**; ")
    lines = ["## Real model sizes: UMT-L at 224/448 and Qwen2.5-1.5B / Qwen2-7B prefill (issue 18)", "",
             f"Command: `python bench/real_shapes.py` (rows of every run are kept in bench/.cache/real_shapes.json; "
             f"this table holds all of them). Date: {date.today().isoformat()}. CPU rows: 2 CPU cores, nothing else "
             f"running (load average below 2), torch {torch.__version__}, SDPA. Random weights; reduced depth, "
             "extrapolated per layer "
             "(see the script's docstring): the tower timed with 1 and 2 of its 23 blocks, the LLM with one "
             f"decoder layer per dropout stage, times 28 layers. {missing}`python bench/real_shapes.py --device "
             "cuda --dtype bfloat16 --frames 1024 10240` measures the GPU rows.", "",
             "| tower | input | machine, dtype | frames per s (23 blocks + merge) | peak MiB (8-clip batches) |",
             "|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["kind"] == "tower"), key=lambda r: (r["machine"], r["size"])):
        lines.append(f"| UMT-L | {r['size']} px | {r['machine']}, {r['dtype']} | {r['fps']:.3g} | "
                     f"{r['peak'] / 2**20:.0f} |")
    if not gpu:
        lines.append("| UMT-L | 448 px | GPU, bfloat16 | (no GPU lent) | |")
    lines += ["", "| LLM shape | frames | visual tokens | machine, dtype | dropout | visual tokens per s (28 layers) | "
              "prefill s | peak MiB per frame (1 layer) | KV MiB per frame (28 layers) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["kind"] == "llm"),
                    key=lambda r: (r["machine"], r["llm"], r["frames"], r["dropout"])):
        lines.append(f"| {r['llm']} | {r['frames']} | {16 * r['frames']} | {r['machine']}, {r['dtype']} | "
                     f"{'released schedule' if r['dropout'] else 'off'} | {r['tokens_per_s']:.3g} | "
                     f"{r['seconds']:.1f} | {r['peak_per_frame'] / 2**20:.2f} | {r['kv_per_frame'] / 2**20:.2f} |")
    if not gpu:
        lines.append("| Qwen2-7B | 1024, 10240 | | GPU, bfloat16 | off / released | (no GPU lent) | | | |")
    from ingest import write_doc

    write_doc("\n".join(lines) + "\n", "real-shapes")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
