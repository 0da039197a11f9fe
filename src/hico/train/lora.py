"""LoRA through PEFT: adapters injected into hico's own modules, saved beside the official weights, merged.

A LoRA checkpoint folder holds the official-layout base weights (with any fully trained parts, such as the
projector) plus `adapter_model.safetensors` (hico module names) and `adapter_config.json`. `hico.load` merges
the adapter on load (`apply_adapter`); `hico.train.engine.merge_checkpoint` (`hico merge-lora`) writes a plain
checkpoint.
PEFT is imported where LoRA is used: it takes seconds, which runs without LoRA do not pay.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hico.checkpoint import read_safetensors
from hico.errors import HicoError
from hico.train.stages import LoraSettings

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
TOWER_LORA_TARGETS = ("qkv", "proj")


def add_lora(model: nn.Module, settings: LoraSettings, train_llm: bool) -> None:
    """Inject LoRA layers (PEFT) into the LLM attention projections, and the tower's if asked; only they and
    the other trained parts learn (a LoRA'd part's own weights stay frozen)."""
    from peft import LoraConfig, inject_adapter_in_model

    for part, targets, wanted in ((model.llm, settings.targets, train_llm),
                                  (model.vision, TOWER_LORA_TARGETS, settings.tower)):
        if not wanted:
            continue
        part.requires_grad_(False)
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=list(targets), bias="none")
        inject_adapter_in_model(config, part)


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA layer into its base weight and put the plain layer back; returns how many."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in layers:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    return len(layers)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base weights under plain hico names, LoRA weights) of a possibly LoRA-injected HicoModel state."""
    base, lora = {}, {}
    for key, value in state.items():
        if ".lora_" in key:
            lora[key] = value
        else:
            base[key.replace(".base_layer.", ".")] = value
    return base, lora


def adapter_settings(folder: str | Path) -> LoraSettings:
    path = Path(folder) / ADAPTER_CONFIG
    try:
        raw = json.loads(path.read_text())["hico_lora"]
        return LoraSettings(**{k: tuple(v) if k == "targets" else v for k, v in raw.items()})
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise HicoError(f"{path}: not a hico LoRA adapter config ({exc})") from exc


def apply_adapter(model: nn.Module, folder: str | Path) -> int:
    """Inject the folder's adapter into a loaded HicoModel, load its weights and merge it; returns layers merged."""
    folder = Path(folder)
    weights = read_safetensors(folder / ADAPTER_WEIGHTS)
    add_lora(model, adapter_settings(folder), train_llm=any(k.startswith("llm.") for k in weights))
    expected = {k for k in model.state_dict() if ".lora_" in k}
    if set(weights) != expected:
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise HicoError(f"{folder / ADAPTER_WEIGHTS}: does not fit the model (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
    return merge_lora(model)

