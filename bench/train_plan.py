"""Memory per GPU of the official training recipes (issue 26): parameters, gradients and AdamW states of the
7B (Qwen2-7B + UMT-L at 448) and 2B models for stage 3 (everything trained), stage 4 (tower and projector; LLM
frozen) and a LoRA fine-tune, under DDP, FSDP and DeepSpeed ZeRO 1/2/3 at 8 and 32 GPUs. Computed, not measured
(hico.train.plan: exact parameter counts from the meta device, bytes per parameter per engine); writes the
Markdown table to docs/training_memory.md between its markers.

  python bench/train_plan.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.train.plan import (GIB, STRATEGIES, checkpointed_activations, count_parameters, lora_parameters,
                             memory_plan, released_config, tower_checkpointed_activations)

DOC = Path(__file__).resolve().parents[1] / "docs" / "training_memory.md"
BEGIN, END = "<!-- train_plan: begin -->", "<!-- train_plan: end -->"
RECIPES = [("stage 3", ("vision", "projector", "llm"), 0), ("stage 4", ("vision", "projector"), 0),
           ("LoRA r16 (stage 3 data)", ("llm",), 16)]


def gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def table(llm: str, gpus: tuple[int, ...]) -> list[str]:
    official = released_config(llm)
    counts = count_parameters(official)
    lines = [f"**{llm} + UMT-L 448**: tower {counts['vision']:,}, projector {counts['projector']:,}, "
             f"LLM {counts['llm']:,} parameters; checkpointed LLM layer inputs at 32,768 tokens (bf16): "
             f"{gib(checkpointed_activations(official, 32768))} GiB per GPU on top; a trained tower's checkpointed "
             f"block inputs at 512 frames: {gib(tower_checkpointed_activations(official, 512))} GiB.", "",
             "| recipe | trained parameters | strategy | " + " | ".join(f"{n} GPUs: params / grads / optim = total GiB"
                                                                      for n in gpus) + " |",
             "|---|---:|---|" + "---:|" * len(gpus)]
    for name, trained, rank in RECIPES:
        lora = lora_parameters(official, rank) if rank else 0
        trainable = lora or sum(counts[p] for p in trained)
        for strategy in STRATEGIES:
            cells = []
            for n in gpus:
                plan = memory_plan(counts, trained, strategy, n, lora)
                cells.append(f"{gib(plan.params)} / {gib(plan.grads)} / {gib(plan.optimizer)} = "
                             f"**{gib(plan.total)}**")
            lines.append(f"| {name} | {trainable:,} | {strategy} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    lines = []
    for llm in ("Qwen2-7B", "Qwen2.5-1.5B"):
        lines += table(llm, tuple(args.gpus)) + [""]
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    doc = args.doc.read_text() if args.doc.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{args.doc} lacks the markers {BEGIN} / {END}")
    head, rest = doc.split(BEGIN, 1)
    args.doc.write_text(head + BEGIN + "\n" + text + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
