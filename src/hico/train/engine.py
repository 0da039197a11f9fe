"""Training on transformers' Trainer (accelerate underneath: torchrun/accelerate launch, DDP, FSDP, DeepSpeed).

hico adds three things around the stock engine: a loss module that runs the HiCo model sample by sample
(each sample has its own visual span; optional in-LLM dropout), an optimizer with a separate tower learning
rate, and checkpoints in the official layout (config.json + model.safetensors under the official key names,
tokenizer files, and for LoRA runs `adapter_model.safetensors` + `adapter_config.json`), which `hico.load`
reads. Trainer keeps the optimizer, scheduler, RNG and data position next to them, so a run resumes.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from hico.atomic import atomic_path, write_text_atomic
from hico.checkpoint import HicoConfig, hico_to_official, load_state_dict, read_safetensors, save_state_dict
from hico.dropout import DropSchedule
from hico.errors import HicoError
from hico.model import HicoModel
from hico.train import fsdp, zero
from hico.train.labels import IGNORE_INDEX
from hico.train.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, add_lora, apply_adapter, split_state
from hico.train.stages import LoraSettings, TrainConfig

log = logging.getLogger(__name__)


# Besides tokenizer*: what a checkpoint's tokenizer and chat template are saved as (vLLM prefers a checkpoint's
# own chat template to the plugin's fallback, so a merged checkpoint must keep it).
TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
# transformers 5.24 names it activation_checkpointing, 5.19 (vLLM's pin) gradient_checkpointing
CHECKPOINTING_ARG = ("activation_checkpointing" if "activation_checkpointing"
                     in inspect.signature(TrainingArguments.__init__).parameters else "gradient_checkpointing")


class TrainingModel(nn.Module):
    """Loss of a batch of samples: the mean cross-entropy over every answer token in the batch."""

    def __init__(self, model: HicoModel, schedule: DropSchedule = DropSchedule()) -> None:
        super().__init__()
        self.model = model
        self.schedule = schedule

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        """Recompute the LLM layers' activations in the backward pass (the stock Qwen2 implementation)."""
        self.model.llm.activation_checkpointing_enable(activation_checkpointing_kwargs or {"use_reentrant": False},
                                                       every_n_layers, offload)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None,
                                      every_n_layers: int = 1, offload: bool = False) -> None:
        """The same, by the name transformers 5.19's Trainer calls."""
        self.model.llm.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs or {"use_reentrant": False},
            every_n_layers=every_n_layers, offload=offload)

    def forward(self, ids: list[torch.Tensor], targets: list[torch.Tensor],
                clips: list[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        total, count = None, 0
        for sample_ids, sample_targets, sample_clips in zip(ids, targets, clips):
            loss, tokens = self.sample_loss(sample_ids, sample_targets, sample_clips)
            total = loss if total is None else total + loss
            count += tokens
        return {"loss": total / max(count, 1)}

    def sample_loss(self, ids: torch.Tensor, targets: torch.Tensor,
                    clips: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """Summed answer-token loss of one sample and the number of answer tokens."""
        visual = self.model.encode_clips(clips).flatten(0, 1) if clips is not None else None
        embeds, span = self.model.embed(ids, visual)
        labels = expand_labels(targets.to(embeds.device), span)
        queries = answer_queries(labels) if span is not None and self.schedule.enabled else None
        if queries is not None and len(queries):  # no query: not dropped, as official
            prefill = self.model.prefill(embeds, span, self.schedule, all_logits=True, head=False,
                                         query_positions=queries)
            hidden = prefill.hidden[0]
            labels = torch.cat([labels[: span.start], labels.new_full((len(prefill.kept),), IGNORE_INDEX),
                                labels[span.start + span.count:]])
        else:
            hidden = self.model.llm.model(inputs_embeds=embeds, use_cache=False).last_hidden_state[0]
        chosen = labels[1:] != IGNORE_INDEX
        picked = self.model.llm.lm_head(hidden[:-1][chosen])
        loss = F.cross_entropy(picked.float(), labels[1:][chosen], reduction="sum")
        return loss, int(chosen.sum())


def expand_labels(targets: torch.Tensor, span) -> torch.Tensor:
    """Labels for the embedded sequence: the placeholder becomes `span.count` ignored visual positions."""
    if span is None:
        return targets
    return torch.cat([targets[: span.start], targets.new_full((span.count,), IGNORE_INDEX), targets[span.start + 1:]])


def answer_queries(labels: torch.Tensor) -> torch.Tensor:
    """The token before each answer: the queries whose attention guides text-guided drops in training."""
    starts = (labels[1:] != IGNORE_INDEX) & (labels[:-1] == IGNORE_INDEX)
    return starts.nonzero().flatten()


def set_trainable(model: HicoModel, parts: tuple[str, ...]) -> None:
    for name, module in (("vision", model.vision), ("projector", model.projector), ("llm", model.llm)):
        module.requires_grad_(name in parts)


def save_checkpoint(model: HicoModel, folder: str | Path, official_config: dict, tokenizer=None,
                    lora: LoraSettings | None = None, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint `hico.load` reads: official layout, plus the LoRA adapter when there is one."""
    folder = Path(folder)
    base, adapter = split_state(state if state is not None else model.state_dict())
    save_state_dict(base, folder, official_config)
    if adapter:
        with atomic_path(folder / ADAPTER_WEIGHTS) as tmp:
            save_file({k: v.detach().contiguous() for k, v in adapter.items()}, str(tmp))
        save_adapter_config(folder, lora or LoraSettings())
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)
    return folder


def save_adapter_config(folder: Path, lora: LoraSettings) -> None:
    write_text_atomic(folder / ADAPTER_CONFIG, json.dumps({"hico_lora": asdict(lora)}, indent=1))


def save_descriptor(folder: str | Path, official_config: dict, tokenizer=None,
                    lora: LoraSettings | None = None) -> Path:
    """The files of a sharded FSDP checkpoint beside its shards: config.json, the tokenizer and a LoRA run's
    adapter config, from which `hico export-checkpoint` rebuilds the model (the weights are the shards)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if lora is not None:
        save_adapter_config(folder, lora)
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)
    write_text_atomic(folder / "config.json", json.dumps(official_config, indent=2))
    return folder


def save_tokenizer(tokenizer, folder: Path) -> None:
    """The tokenizer's files, each renamed into place whole (save_pretrained writes them in place)."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".tokenizer-") as staging:
        tokenizer.save_pretrained(staging)
        for file in sorted(Path(staging).iterdir()):
            os.replace(file, folder / file.name)


def load_weights(model: HicoModel, folder: str | Path) -> None:
    """Load a checkpoint's base weights (and adapter, if saved and injected) into a possibly LoRA'd model."""
    folder = Path(folder)
    current = model.state_dict()
    names = {key.replace(".base_layer.", "."): key for key in current if ".lora_" not in key}
    state = {names.get(k, k): v for k, v in load_state_dict(folder).items()}
    adapter = (folder / ADAPTER_WEIGHTS).exists()
    if adapter:
        state.update(read_safetensors(folder / ADAPTER_WEIGHTS))
    prefix = model.config.vision_prefix
    missing = [hico_to_official(k, prefix) if ".lora_" not in k else k for k in current if k not in state
               and not k.endswith("lm_head.weight") and (adapter or ".lora_" not in k)]
    if missing:
        raise HicoError(f"{folder}: the checkpoint lacks {len(missing)} weights the model has, e.g. {missing[:3]}")
    model.load_state_dict(state, strict=False)


def merge_checkpoint(folder: str | Path, out: str | Path) -> Path:
    """`hico merge-lora`: write `out`, the LoRA checkpoint `folder` with its adapter merged into the weights, as
    a plain official-layout checkpoint with the same config and tokenizer files."""
    folder, out = Path(folder), Path(out)
    if not (folder / ADAPTER_WEIGHTS).exists():
        raise HicoError(f"{folder}: holds no LoRA adapter ({ADAPTER_WEIGHTS}); nothing to merge")
    if out.exists() and any(out.iterdir()):
        raise HicoError(f"{out} exists and is not empty; choose a new folder (nothing was written)")
    official = json.loads((folder / "config.json").read_text())
    model = HicoModel(HicoConfig.from_official(official, str(folder / "config.json")))
    load_weights(model, folder)  # the base weights; the adapter's wait for its layers
    model.reset_buffers()
    apply_adapter(model, folder)  # injects, loads and merges the adapter, leaving plain layers
    save_state_dict(model.state_dict(), out, official)
    for name in folder.iterdir():
        if name.is_file() and (name.name.startswith("tokenizer") or name.name in TOKENIZER_FILES):
            shutil.copy2(name, out / name.name)
    return out


class HicoTrainer(Trainer):
    """Trainer with a separate tower learning rate and official-layout checkpoints."""

    def __init__(self, *args, vision_lr: float | None, official_config: dict, lora: LoraSettings | None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.vision_lr, self.official_config, self.lora = vision_lr, official_config, lora
        if self.is_deepspeed_enabled:  # "auto" bucket sizes: Trainer would look for a config on TrainingModel
            zero.fill_widths(self.accelerator.state.deepspeed_plugin.hf_ds_config, self.model.model.llm.config)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if fsdp.enable_on_cpu(self.accelerator, self.args.fsdp_plugin_args):  # accelerate's GPU-only switch
            self.is_fsdp_enabled = True

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            args = self.args
            groups: dict[float, list[nn.Parameter]] = {}
            for name, parameter in self.model.named_parameters():
                if parameter.requires_grad:
                    tower = ".vision." in f".{name}" and self.vision_lr is not None
                    groups.setdefault(self.vision_lr if tower else args.learning_rate, []).append(parameter)
            self.optimizer = torch.optim.AdamW(
                [{"params": params, "lr": lr} for lr, params in groups.items()], lr=args.learning_rate,
                betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, weight_decay=args.weight_decay)
        return self.optimizer

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # Trainer calls this on every process (to join FSDP/DeepSpeed gathers first); exactly one writes.
        # should_save is world process zero (hico never sets save_on_each_node). Two writers of one
        # checkpoint raced on a loaded machine: one found the other's model.safetensors and stopped the run.
        if not self.args.should_save:
            return
        folder = Path(output_dir or self.args.output_dir)
        model = self.accelerator.unwrap_model(self.model).model
        state = None
        if state_dict is not None:
            state = {k.removeprefix("model."): v for k, v in state_dict.items()}
        save_checkpoint(model, folder, self.official_config, self.processing_class, self.lora, state)
        with atomic_path(folder / "training_args.bin") as tmp:
            torch.save(self.args, tmp)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not (self.is_fsdp_enabled and fsdp.shards_checkpoints(self.accelerator)):
            return super().save_model(output_dir, _internal_call)
        folder = output_dir or self.args.output_dir
        if not _internal_call:  # the run's output: gathered from every process, in the official layout
            self._save(folder, state_dict=self.accelerator.get_state_dict(self.model))
        elif self.args.should_save:  # checkpoint-N: each process writes its shards next (save_fsdp_model)
            save_descriptor(folder, self.official_config, self.processing_class, self.lora)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        # Every process has written its part (process zero the weights, each its RNG state) before any
        # goes on, so a checkpoint folder is complete once training continues past it.
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self.is_fsdp_enabled:  # each process reads its own shards (accelerate's load_fsdp_model)
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_weights(self.accelerator.unwrap_model(model or self.model).model, resume_from_checkpoint)


class LossLog(TrainerCallback):
    """Losses as logged, for the summary and for tests."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if logs and "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))


def training_arguments(config: TrainConfig, output: str | Path, **extra) -> TrainingArguments:
    on_gpu = torch.cuda.is_available()
    zero_config = zero.prepare(config.deepspeed, on_gpu) if config.deepspeed else None
    args = TrainingArguments(
        output_dir=str(output), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.lr, warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        lr_scheduler_type=config.scheduler, logging_steps=config.logging_steps, save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, seed=config.seed, data_seed=config.seed,
        bf16=on_gpu and torch.cuda.is_bf16_supported(), use_cpu=not on_gpu,
        **{CHECKPOINTING_ARG: config.gradient_checkpointing}, remove_unused_columns=False,
        dataloader_num_workers=config.workers, ddp_find_unused_parameters=True, report_to="none",
        deepspeed=zero_config, fsdp=config.fsdp or None, fsdp_config=config.fsdp_config, **extra)
    if zero_config is not None:
        zero.check_config(zero_config, args)  # DeepSpeed's own parser: a misspelt key stops the run here
    return args


def build_model(folder: str | Path, config: TrainConfig, official: dict) -> HicoModel:
    model = HicoModel(HicoConfig.from_official(official, str(Path(folder) / "config.json")))
    set_trainable(model, config.train)
    if config.lora is not None:
        # The adapters' random initial weights come from the run's seed, not from whatever the process drew
        # before: the same in every process (FSDP2, unlike DDP, does not copy process 0's weights to the others)
        # and in every run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            add_lora(model, config.lora, "llm" in config.train)
    load_weights(model, folder)
    model.reset_buffers()
    return model
