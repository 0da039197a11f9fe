"""FSDP through Trainer and accelerate on any processes, CPU (gloo) ones included; sharded checkpoints and their
export to the official single-folder layout.

accelerate 1.15 turns FSDP on only for accelerator devices: its AcceleratorState sets DistributedType.FSDP for
MULTI_GPU, MULTI_NPU, ... but keeps MULTI_CPU on CPU processes, drops the FSDP plugin and wraps the model in
DDP without a word. FSDP2 itself (`torch.distributed.fsdp.fully_shard`) runs on CPU tensors over gloo, so
`enable_on_cpu` sets the state accelerate sets on a GPU and everything after it (wrapping the decoder layers and
tower blocks, sharded optimizer, sharded checkpoints, resume) is accelerate's and Trainer's own code.

A sharded checkpoint (`fsdp_config` `state_dict_type: SHARDED_STATE_DICT`, as `configs/fsdp.json` sets) holds
each process's shards in `pytorch_model_fsdp_0/` and `optimizer_0/` (torch.distributed.checkpoint), no gathered
weights: a gather to one process at every save is what sharding avoids. Its `config.json`, tokenizer and
`adapter_config.json` are written beside them, so `export_checkpoint` (`hico export-checkpoint`) can rebuild
the model in one process and write the official layout. The run's final output is gathered and written in the
official layout directly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from hico.errors import HicoError, OptionError

SHARDS = "pytorch_model_fsdp_0"  # accelerate's FSDP_MODEL_NAME for the first (only) model: a DCP folder
WRAPPED = "model."  # the TrainingModel's attribute holding the HicoModel: every saved key starts with it


def enable_on_cpu(accelerator, plugin_args: dict | None) -> bool:
    """Turn FSDP on where accelerate dropped it for CPU processes; True when it did. FSDP2 only: PyTorch's
    FSDP1 (FullyShardedDataParallel) refuses CPU ("FSDP needs a non-CPU accelerator device", torch 2.13)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    if plugin_args.get("fsdp_version") != 2:
        raise OptionError("FSDP on CPU processes needs FSDP2 (PyTorch's FSDP1 needs an accelerator device): set "
                          "\"version\": 2 in fsdp_config, or leave version out (2 is the default)")
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
    # Where accelerate sets FSDP it writes it into PartialState as well: every later AcceleratorState() (the
    # optimizer wrapper, RNG syncs) copies PartialState's distributed type over its own.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def shards_checkpoints(accelerator) -> bool:
    """Whether checkpoints are saved as shards (SHARDED_STATE_DICT), not gathered weights."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    return plugin is not None and "SHARDED_STATE_DICT" in str(plugin.state_dict_type)


def is_sharded(folder: str | Path) -> bool:
    """Whether a checkpoint folder holds FSDP shards whose save finished (DCP writes .metadata last)."""
    return (Path(folder) / SHARDS / ".metadata").is_file()


def local_share(module: torch.nn.Module) -> tuple[int, int]:
    """(elements this process holds, elements of the whole module) over its parameters: half of the whole on
    each of 2 processes when FSDP shards the module, the whole when it does not."""
    from torch.distributed.tensor import DTensor

    held = total = 0
    for parameter in module.parameters():
        total += parameter.numel()
        held += parameter.to_local().numel() if isinstance(parameter, DTensor) else parameter.numel()
    return held, total


def export_checkpoint(folder: str | Path, out: str | Path) -> Path:
    """`hico export-checkpoint`: write `out`, the sharded FSDP checkpoint `folder` (a `checkpoint-N`) in the
    official layout `hico.load` reads (config.json, model.safetensors, tokenizer files, and the LoRA adapter
    of a LoRA run). One process, no process group: torch.distributed.checkpoint reads every shard."""
    import torch.distributed.checkpoint as dcp

    from hico.api import load_tokenizer
    from hico.checkpoint import HicoConfig
    from hico.model import HicoModel
    from hico.train.engine import save_checkpoint
    from hico.train.lora import ADAPTER_CONFIG, adapter_settings, add_lora

    folder, out = Path(folder), Path(out)
    if not is_sharded(folder):
        raise HicoError(f"{folder}: holds no FSDP shards ({SHARDS}/.metadata); a checkpoint saved without "
                        "sharding is already in the official layout")
    if out.exists() and any(out.iterdir()):
        raise HicoError(f"{out} exists and is not empty; choose a new folder (nothing was written)")
    official = json.loads((folder / "config.json").read_text())
    model = HicoModel(HicoConfig.from_official(official, str(folder / "config.json")))
    reader = dcp.FileSystemReader(str(folder / SHARDS))
    saved = list(reader.read_metadata().state_dict_metadata)
    lora = None
    if (folder / ADAPTER_CONFIG).exists():
        lora = adapter_settings(folder)
        add_lora(model, lora, train_llm=any(".lora_" in k and f".{WRAPPED}llm." in f".{k}" for k in saved))
    # Loaded in place: the template's tensors are the model's own. Every key must be in the shards.
    template = {"model": {WRAPPED + k: v for k, v in model.state_dict().items()}}
    try:
        with warnings.catch_warnings():  # "torch.distributed is disabled ...": one process is the intent
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(template, storage_reader=reader, no_dist=True)
    except Exception as exc:  # DCP raises its CheckpointException, which names the missing keys
        raise HicoError(f"{folder / SHARDS}: does not fit the model of its config.json ({exc})") from exc
    model.reset_buffers()
    out.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(model, out, official, load_tokenizer(folder), lora)
