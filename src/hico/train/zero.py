"""DeepSpeed ZeRO (stages 1-3) through Trainer and accelerate, on GPUs and on CPU processes (gloo).

DeepSpeed's CPU accelerator (chosen by itself when no GPU is found; `DS_ACCELERATOR=cpu` forces it) runs its
collectives over gloo unless oneccl_bindings_for_pytorch is installed, and accelerate sets DistributedType.DEEPSPEED
for CPU processes as for GPUs, so ZeRO-2 and ZeRO-3 run on CPU with Trainer's own code. hico adds three things
(`prepare` does the first two, and checks that a launcher started the process):

- `load_config`: a ZeRO-3 config always gathers the full weights at a save (`stage3_gather_16bit_weights_on_model
  _save`), so every checkpoint and the run's output are in the official layout `hico.load` reads. Without it,
  Trainer hands `_save` an empty state dict and the weights exist only as ZeRO partitions.
- `skip_shared_memory_op`: DeepSpeed's CPU backend compiles a C++ shared-memory all-reduce (about two minutes on
  2 cores) at start-up, for inference only; training never calls it.
- `check_config`: DeepSpeed's own parser on a config with its "auto" values filled as Trainer fills them, so a
  typo (`overlap_com`) fails at start-up, and in the tests for every file in configs/deepspeed/.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

from hico.errors import OptionError

log = logging.getLogger(__name__)

GATHER = "stage3_gather_16bit_weights_on_model_save"  # a misnomer: weights are gathered in their own dtype
LAUNCH = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")  # what torchrun sets, DeepSpeed reads


def prepare(path: str | Path, on_gpu: bool) -> dict:
    """Everything before a DeepSpeed run starts: the launch is checked and the config loaded (`load_config`);
    on CPU, the shared-memory op is skipped."""
    missing = [name for name in LAUNCH if name not in os.environ]
    if missing and importlib.util.find_spec("mpi4py") is None:
        # DeepSpeed would look for an MPI launch next and stop on the missing mpi4py
        raise OptionError(f"DeepSpeed runs under a launcher ({', '.join(missing)} unset): torchrun "
                          "--nproc_per_node N -m hico.cli train ... (N=1 for one process), or accelerate launch")
    config = load_config(path)
    if not on_gpu:
        skip_shared_memory_op()
    return config


def load_config(path: str | Path) -> dict:
    """The DeepSpeed JSON config at `path` as hico runs it (ZeRO-3 gathers the weights at every save)."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OptionError(f"deepspeed config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise OptionError(f"deepspeed config {path}: a JSON object expected")
    zero = config.get("zero_optimization", {})
    if isinstance(zero, dict) and zero.get("stage") == 3 and zero.get(GATHER) is not True:
        log.warning("%s: ZeRO-3 checkpoints are written gathered, in the official layout (%s set to true)", path,
                    GATHER)
        config = dict(config, zero_optimization=dict(zero, **{GATHER: True}))
    return config


def check_config(config: dict, args, hidden_size: int = 1024, steps: int = 100):
    """DeepSpeed's `DeepSpeedConfig` of `config` with its "auto" values filled from `args` (TrainingArguments)
    as Trainer fills them; `hidden_size` and `steps` stand for the model's width and the run's length, which
    Trainer fills in later. Raises OptionError with DeepSpeed's (or Trainer's) message."""
    try:
        from deepspeed.runtime.config import DeepSpeedConfig
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError as exc:
        raise OptionError(f"--set deepspeed needs DeepSpeed: pip install 'hico[deepspeed]' ({exc})") from exc
    # HfTrainerDeepSpeedConfig registers itself as the process's current DeepSpeed config (a weak reference that
    # from_pretrained and PEFT consult): the previous one is put back.
    previous = hf_deepspeed._hf_deepspeed_config_weak_ref
    try:
        filled = hf_deepspeed.HfTrainerDeepSpeedConfig(json.loads(json.dumps(config)))
        filled.trainer_config_process(args)
        filled.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=hidden_size)), steps)
        parsed = dict(filled.config)
        micro, accumulation = parsed.get("train_micro_batch_size_per_gpu"), parsed.get("gradient_accumulation_steps")
        if isinstance(micro, int) and isinstance(accumulation, int):
            # DeepSpeed checks the global batch against the processes it sees, and it sees one here (Trainer has
            # checked it against the run's processes above)
            parsed["train_batch_size"] = micro * accumulation
        return DeepSpeedConfig(parsed)
    except (ValueError, TypeError, AssertionError) as exc:  # pydantic's ValidationError is a ValueError
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]  # one line, as the CLI prints
        message = "; ".join(line for line in lines if not line.startswith("For further information"))
        raise OptionError(f"deepspeed config: {message}") from exc
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = previous


def fill_widths(ds_config, llm_config) -> None:
    """Fill the "auto" bucket sizes of `ds_config` (transformers' HfTrainerDeepSpeedConfig) from the LLM's width
    by Trainer's rule (transformers' `trainer_config_finalize`). Trainer reads the width from `model.config`,
    which hico's TrainingModel lacks, and stops there; the official ZeRO-3 configs set these to "auto"."""
    width = llm_config.hidden_size
    ds_config.fill_only("zero_optimization.reduce_bucket_size", width * width)
    if ds_config.is_zero3():
        ds_config.fill_only("zero_optimization.stage3_prefetch_bucket_size", int(0.9 * width * width))
        ds_config.fill_only("zero_optimization.stage3_param_persistence_threshold", 10 * width)


def skip_shared_memory_op() -> None:
    """Keep DeepSpeed's CPU backend from compiling its shared-memory all-reduce op (`deepspeed_shm_comm`, used
    by `inference_all_reduce` only; without it that falls back to torch.distributed). Call before DeepSpeed
    starts its communication backend; no effect on accelerators, which have no such op."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
