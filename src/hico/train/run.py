"""`hico train`: one stage of training from a checkpoint folder and a data file, into an output folder.

    train("ckpt/", "stage3.yaml", "out/", load_stage(3, {"max_steps": 100}))

Launch on several processes or machines with torchrun or `accelerate launch` (see the README); everything
distributed (DDP, FSDP, DeepSpeed ZeRO) is the Trainer's. `resume=True` continues from the output folder's
last checkpoint: weights, optimizer, scheduler, RNG and data position.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from hico.api import load_tokenizer
from hico.checkpoint import HicoConfig, resolve_checkpoint
from hico.errors import OptionError
from hico.records import is_main_process
from hico.train.data import load_conversations, load_mixture
from hico.train.dataset import ConversationDataset, SkipReport, collate, prepare
from hico.train.engine import HicoTrainer, LossLog, TrainingModel, build_model, training_arguments
from hico.train.fsdp import is_sharded
from hico.train.stages import TrainConfig, high_res_config


@dataclass
class TrainResult:
    output: Path
    losses: list[tuple[int, float]]  # (step, logged loss)
    skips: SkipReport
    steps: int


def load_samples(data: str | Path, seed: int = 0):
    path = Path(data)
    if path.suffix in (".yaml", ".yml"):
        return load_mixture(path, seed)
    return load_conversations(path)


def checkpoints(output: Path) -> list[Path]:
    """The `checkpoint-N` folders of a run, oldest first."""
    if not output.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output.iterdir()
             if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    return [folder for _, folder in sorted(found)]


def last_checkpoint(output: Path, set_aside: bool = False) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    A run killed while saving leaves its newest folder incomplete (Trainer writes trainer_state.json last,
    and not atomically); resuming from it would fail. With `set_aside`, such a folder is renamed to
    `incomplete-checkpoint-N` (never deleted) so the resumed run can write that step again."""
    for folder in reversed(checkpoints(output)):
        if _complete(folder):
            return folder
        if set_aside:
            aside, n = folder.with_name(f"incomplete-{folder.name}"), 1
            while aside.exists():
                aside, n = folder.with_name(f"incomplete-{folder.name}-{n}"), n + 1
            os.rename(folder, aside)
            warnings.warn(f"{folder} is incomplete (the run was stopped while saving it); it was renamed to "
                          f"{aside.name} and the run resumes from an earlier checkpoint", stacklevel=2)
    return None


def _complete(folder: Path) -> bool:
    weights = (folder / "model.safetensors").is_file() or is_sharded(folder)  # gathered, or FSDP's shards
    if not (weights and all((folder / name).is_file() for name in ("config.json", "trainer_state.json"))):
        return False
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def train(model_path: str | Path, data: str | Path, output: str | Path, config: TrainConfig, *,
          resume: bool = False, progress: bool = True, callbacks: list | None = None, revision: str | None = None,
          **trainer_args) -> TrainResult:
    model_path, output = resolve_checkpoint(model_path, revision), Path(output)  # a folder or a Hub id
    if not (model_path / "config.json").is_file():
        raise OptionError(f"{model_path}: no config.json; pass a checkpoint folder in the official layout")
    if (output / "model.safetensors").exists():
        raise OptionError(f"{output} holds a finished run; choose a new --output")
    earlier = checkpoints(output)
    if earlier and not resume:
        raise OptionError(f"{output} holds checkpoints of an earlier run ({earlier[-1].name}); pass --resume to "
                          "continue it or choose a new --output")
    last = last_checkpoint(output, set_aside=resume and is_main_process())
    if resume and not last:
        raise OptionError(f"{output}: no checkpoint to resume from")
    official = json.loads((model_path / "config.json").read_text())
    if config.high_res:
        official = high_res_config(official)
    hico_config = HicoConfig.from_official(official, str(model_path / "config.json"))
    if config.dropout == "model" and not hico_config.dropout_schedule.enabled:
        raise OptionError(f"{model_path}/config.json sets no in-LLM dropout (llm_compress_layer_list); "
                          "set one to train with dropout")
    schedule = hico_config.schedule(config.dropout)  # the rules of `Hico.schedule`
    tokenizer = load_tokenizer(model_path)
    if tokenizer is None:
        raise OptionError(f"{model_path}: no tokenizer files; training needs them")
    main = is_main_process()
    samples, report = prepare(load_samples(data, config.seed), tokenizer, config, progress and main)
    if main:
        print(f"data: {report.summary()}", flush=True)
    model = build_model(model_path, config, official)
    dataset = ConversationDataset(samples, tokenizer, config, hico_config.vision.image_size, report)
    losses = LossLog()
    trainer = HicoTrainer(model=TrainingModel(model, schedule),
                          args=training_arguments(config, output, disable_tqdm=not progress, **trainer_args),
                          train_dataset=dataset, data_collator=collate, processing_class=tokenizer,
                          callbacks=[losses, *(callbacks or [])], vision_lr=config.vision_lr,
                          official_config=official, lora=config.lora)
    state = trainer.train(resume_from_checkpoint=str(last) if resume else None)
    trainer.save_model(str(output))  # writes on world process zero only (HicoTrainer._save)
    if trainer.is_world_process_zero():
        report.save(output / "skips.json")
        print(f"data: {report.summary()}; {len(report.failed_in_training)} failed while training", flush=True)
    # The others wait until process zero has written everything: none exits (closing the process group
    # under a writer) or reads the output folder before it is complete.
    trainer.accelerator.wait_for_everyone()
    return TrainResult(output, losses.losses, report, state.global_step)
