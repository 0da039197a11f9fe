"""bfloat16 and int8 LLM linears against float32 (issue 18): conformance logits, memory and time per answer.

1. The conformance fixtures (../shared/conformance/*/, made by the official code in float32): hico's logits in
   each precision against the official ones (max abs error / max abs reference, as `python -m hico.conformance`
   measures) and whether the greedy tokens still equal the official ones.
2. Memory and time per answer on a Qwen2.5-1.5B-wide LLM (hidden 1536, 12 heads, 2 KV heads, MLP 8960, its
   151,936-token vocabulary) with random weights and 4 decoder layers (to fit this CPU), each precision in
   its own process: weight bytes, peak RSS (VmHWM), prefill of --frames frames (16 visual tokens each) and
   --new-tokens greedy tokens.

The accuracy cost on the embedded model's held-out NIAH is measured by `bench/tiny_model.py --precision`.

  python bench/precision.py                        # fixtures + 256 frames, 32 new tokens
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

import torch

FIXTURES = Path(os.environ.get("HICO_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "conformance"
PRECISIONS = ("float32", "bfloat16", "int8")


def load(folder, precision: str):
    import hico

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    return hico.load(folder, dtype=dtype, quantize="int8" if precision == "int8" else None)


def fixture_row(folder: Path, precision: str) -> dict:
    """Logits and greedy tokens of one fixture's prompt, as `hico.conformance` computes them."""
    from safetensors.torch import load_file

    from hico.generate import GenerationOptions, generate

    reference = load_file(str(folder / "reference.safetensors"))
    model = load(folder, precision).model
    config = model.config
    with torch.inference_mode():
        pixels = reference["pixel_values"].float()
        clips = pixels.reshape(-1, config.local_num_frames, *pixels.shape[1:])
        embeds, span = model.embed(reference["input_ids"].flatten().long(), model.encode_clips(clips))
        full = model.prefill(embeds, span, all_logits=True)
        logits = full.logits[0].float()
        wanted = reference["generated_full"]
        step = lambda token: model.decode(torch.tensor([[token]]), full.cache)[0, -1]  # noqa: E731
        ids = generate(step, full.logits[0, -1].float(), GenerationOptions(max_new_tokens=wanted.numel()))
        # the LLM alone: the official projector output in, so that merge decisions cannot differ
        embeds, span = model.embed(reference["input_ids"].flatten().long(), reference["projector_out"])
        llm_only = model.prefill(embeds, span, all_logits=True).logits[0].float()
    expected = reference["logits_full"].float()
    scale = expected.abs().max().item()
    return {"fixture": folder.name, "precision": precision, "relative": (logits - expected).abs().max().item() / scale,
            "llm_relative": (llm_only - expected).abs().max().item() / scale, "greedy": ids == wanted.tolist(),
            "top1": float((logits.argmax(-1) == expected.argmax(-1)).float().mean()),
            "llm_top1": float((llm_only.argmax(-1) == expected.argmax(-1)).float().mean())}


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def answer_row(precision: str, frames: int, new_tokens: int, layers: int) -> dict:
    """One answer (prefill + greedy tokens) on the 1.5B-wide LLM, in this process."""
    from hico.quantize import quantize_llm
    from hico.synthetic.checkpoints import random_model, tiny_official_config

    config = tiny_official_config(hidden_size=1536, layers=layers, heads=12, kv_heads=2, vocab_size=151936)
    config["intermediate_size"] = 8960
    model = random_model(config, seed=0)
    if precision == "bfloat16":
        model = model.to(torch.bfloat16)
        model.reset_buffers()
    elif precision == "int8":
        quantize_llm(model, "int8")
    weights = sum(_bytes(t) for t in model.llm.state_dict().values())
    visual = torch.randn(16 * frames, 1536, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(3, 1000, (45,), generator=torch.Generator().manual_seed(1))
    ids[14] = -200
    open("/proc/self/clear_refs", "w").write("5")
    base = _status("VmRSS")
    with torch.inference_mode():
        start = time.perf_counter()
        embeds, span = model.embed(ids, visual)
        state = model.prefill(embeds, span, chunk=4096)
        prefilled = time.perf_counter()
        token = int(state.logits[0, -1].argmax())
        for _ in range(new_tokens):
            token = int(model.decode(torch.tensor([[token]]), state.cache)[0, -1].argmax())
        done = time.perf_counter()
    return {"precision": precision, "weights": weights, "rss": base, "peak": _status("VmHWM") - base,
            "prefill": prefilled - start, "decode": (done - prefilled) / new_tokens}


def _bytes(tensor: torch.Tensor) -> int:
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is None:
        return tensor.numel() * tensor.element_size()
    return sum(_bytes(getattr(tensor, name)) for name in inner()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(answer_row(args.one, args.frames, args.new_tokens, args.layers)))
        return
    fixtures = sorted(p for p in FIXTURES.iterdir() if (p / "reference.safetensors").exists())
    checks = [fixture_row(folder, precision) for folder in fixtures for precision in PRECISIONS]
    for row in checks:
        print(row, flush=True)
    answers = []
    for precision in PRECISIONS:
        command = [sys.executable, __file__, "--one", precision, "--frames", str(args.frames), "--new-tokens",
                   str(args.new_tokens), "--layers", str(args.layers)]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        answers.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(answers[-1], flush=True)
    f32 = answers[0]
    lines = ["## bfloat16 and int8 against float32 (issue 18)", "",
             f"Command: `python bench/precision.py --frames {args.frames} --new-tokens {args.new_tokens}`. Machine: "
             f"{platform.machine()}, 2 CPU cores (load average {os.getloadavg()[0]:.1f} at the end), no GPU, "
             f"torch {torch.__version__}, torchao 0.18.0 "
             f"(`Int8WeightOnlyConfig`: int8 weights, one scale per output row, LLM linears only). Date: "
             f"{date.today().isoformat()}.", "",
             "Conformance fixtures (official float32 logits of the whole prompt): max abs error / max abs "
             "official logit and the share of positions whose top token agrees, end to end (pixels in) and for the "
             "LLM alone (the official projector output in); and whether the greedy answer tokens equal the "
             "official ones.", "",
             "| fixture | precision | end to end: relative logit error | top-1 agreement | LLM alone: relative "
             "logit error | top-1 agreement | greedy tokens equal |", "|---|---|---|---|---|---|---|"]
    for row in checks:
        lines.append(f"| {row['fixture']} | {row['precision']} | {row['relative']:.1e} | {row['top1']:.1%} | "
                     f"{row['llm_relative']:.1e} | {row['llm_top1']:.1%} | {'yes' if row['greedy'] else 'no'} |")
    lines += ["", f"One answer on a Qwen2.5-1.5B-wide LLM (hidden 1536, 12 heads, 2 KV heads, MLP 8960, vocabulary "
              f"151,936; random weights, {args.layers} decoder layers, so the embeddings and LM head weigh more "
              f"than in the 28-layer model): {args.frames} frames ({16 * args.frames} visual tokens) prefilled in "
              f"chunks of 4,096, then {args.new_tokens} greedy tokens. Each precision in its own process; peak RSS "
              "above the loaded model.", "",
              "| precision | LLM weights MiB | vs float32 | peak RSS above the model MiB | prefill s | vs float32 | "
              "decode ms/token | vs float32 |", "|---|---|---|---|---|---|---|---|"]
    for row in answers:
        lines.append(f"| {row['precision']} | {row['weights'] / 2**20:.0f} | {row['weights'] / f32['weights']:.2f} | "
                     f"{row['peak'] / 2**20:.0f} | {row['prefill']:.2f} | {row['prefill'] / f32['prefill']:.2f} | "
                     f"{row['decode'] * 1e3:.0f} | {row['decode'] / f32['decode']:.2f} |")
    from ingest import write_doc

    write_doc("\n".join(lines) + "\n", "precision")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
