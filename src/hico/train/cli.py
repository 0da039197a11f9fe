"""`hico train`, `hico merge-lora` and `hico export-checkpoint`. The training modules import transformers
(seconds): the commands import them when they run, so that `hico --help` does not wait for them."""

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


def cmd_export_checkpoint(args: argparse.Namespace) -> None:
    from hico.train.fsdp import export_checkpoint

    print(f"wrote {export_checkpoint(args.checkpoint, args.out)}")


def cmd_train_plan(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from hico.errors import OptionError
    from hico.train.plan import GIB, STRATEGIES, count_parameters, lora_parameters, memory_plan, released_config

    config = load_stage(args.stage, parse_overrides(args.set or []))
    if min(args.gpus) < 1:
        raise OptionError(f"--gpus takes GPU counts of at least 1, got {min(args.gpus)}")
    if args.model in ("7B", "2B"):
        official = released_config("Qwen2-7B" if args.model == "7B" else "Qwen2.5-1.5B",
                                   448 if config.high_res else 224)
    else:
        path = Path(args.model) / "config.json"
        if not path.is_file():
            raise OptionError(f"{args.model}: no config.json; pass a checkpoint folder, or 7B / 2B for the released "
                              "shapes")
        official = json.loads(path.read_text())
    if config.lora is not None and config.lora.tower:
        raise OptionError("the plan counts LoRA adapters on the LLM only; leave lora.tower unset")
    counts = count_parameters(official)
    lora = lora_parameters(official, config.lora.rank, config.lora.targets) if config.lora else 0
    trained = ", ".join(f"llm (LoRA rank {config.lora.rank}: {lora:,} adapter parameters)" if lora and part == "llm"
                        else part for part in config.train)
    print(f"parameters: tower {counts['vision']:,}, projector {counts['projector']:,}, LLM {counts['llm']:,}; "
          f"trained: {trained}")
    print("GiB per GPU for parameters + gradients + optimizer states (activations and CUDA context not included; "
          "docs/training_memory.md)")
    print(f"{'strategy':<10}" + "".join(f"{f'{n} GPUs':>12}" for n in args.gpus))
    for strategy in STRATEGIES:
        cells = [memory_plan(counts, config.train, strategy, n, lora).total / GIB for n in args.gpus]
        print(f"{strategy:<10}" + "".join(f"{cell:>12.1f}" for cell in cells))


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

    plan = sub.add_parser("train-plan", help="memory per GPU of a training run under DDP, FSDP and ZeRO 1-3, "
                                             "computed before renting GPUs")
    plan.add_argument("--stage", required=True, help="1, 2, 3, 4, or a YAML file of training settings")
    plan.add_argument("--model", required=True, help="a checkpoint folder (its config.json), or 7B / 2B: the "
                                                     "released models' shapes")
    plan.add_argument("--set", action="append", metavar="KEY=VALUE", help="a training setting, as for hico train "
                                                                         "(e.g. --set lora.rank=16)")
    plan.add_argument("--gpus", type=int, nargs="+", default=[8, 32], help="data-parallel GPU counts (default 8 32)")
    plan.set_defaults(func=cmd_train_plan)

    export = sub.add_parser("export-checkpoint", help="write a sharded FSDP checkpoint (OUTPUT/checkpoint-N) as one "
                                                      "official-layout folder that hico.load reads")
    export.add_argument("checkpoint", help="a checkpoint-N folder with FSDP shards (pytorch_model_fsdp_0/)")
    export.add_argument("--out", required=True, help="new folder for the official-layout checkpoint")
    export.set_defaults(func=cmd_export_checkpoint)
