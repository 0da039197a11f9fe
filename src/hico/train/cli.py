"""`hico train` and `hico merge-lora`. The training modules import transformers (seconds): the commands import
them when they run, so that `hico --help` does not wait for them."""

from __future__ import annotations

import argparse

from hico.train.stages import load_stage, parse_overrides


def cmd_train(args: argparse.Namespace) -> None:
    from hico.train.run import train

    config = load_stage(args.stage, parse_overrides(args.set or []))
    result = train(args.model, args.data, args.output, config, resume=args.resume, revision=args.revision)
    print(f"trained {result.steps} steps; checkpoint in {result.output}")


def cmd_merge_lora(args: argparse.Namespace) -> None:
    from hico.train.engine import merge_checkpoint

    print(f"wrote {merge_checkpoint(args.checkpoint, args.out)}")


def register(sub) -> None:
    train = sub.add_parser("train", help="train one stage (1-4) from a checkpoint on conversation data")
    train.add_argument("--stage", required=True, help="1, 2, 3, 4, or a YAML file of training settings")
    train.add_argument("--data", required=True, help="mixture YAML (official stage format) or conversation JSON/JSONL")
    train.add_argument("--model", required=True, help="checkpoint to start from: a folder (official layout) or a "
                                                      "Hub id")
    train.add_argument("--revision", help="branch, tag or commit of a Hub id (default: main)")
    train.add_argument("--output", required=True, help="folder for checkpoints and the final model")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a setting (values are YAML), e.g. --set lr=2e-5 --set max_steps=100 --set "
                            "lora.rank=8 --set lora.dropout=0.1 (LoRA dropout probability) --set dropout=model "
                            "(in-LLM visual-token dropout: off, model, default, or {type: uniform, layers: [1], "
                            "ratios: [1, 0.5]})")
    train.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    train.set_defaults(func=cmd_train)

    merge = sub.add_parser("merge-lora", help="merge a LoRA training checkpoint into a plain checkpoint")
    merge.add_argument("checkpoint", help="folder with adapter_model.safetensors")
    merge.add_argument("--out", required=True, help="new folder for the merged checkpoint")
    merge.set_defaults(func=cmd_merge_lora)
