"""DeepSpeed ZeRO-2 and ZeRO-3 on two real processes (torchrun, gloo, DeepSpeed's CPU accelerator) with the tiny
model: the optimizer state (and for ZeRO-3 the weights) is partitioned, the per-step losses and final weights equal
a single process's on the same samples, checkpoints resume after SIGKILL, and the output is the official layout
hico.load reads; every config in configs/deepspeed/ passes DeepSpeed's own parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hico
from hico.errors import OptionError
from hico.train import zero
from hico.train.engine import training_arguments
from hico.train.run import train
from hico.train.stages import load_stage
from train_support import FAST, task, torchrun  # noqa: F401  (task: a fixture)

pytest.importorskip("deepspeed")

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "deepspeed").glob("*.json"))
STEPS, SAVE = 4, 2
# 2 processes x 1 sample a step; the single process takes the same 2 samples a step as 2 accumulated micro-batches.
SETTINGS = {**FAST, "batch_size": 1, "grad_accum": 1, "max_steps": STEPS, "logging_steps": 1, "save_steps": SAVE}
# float32 on both sides. The first step's weights are bit-identical under ZeRO-2 (within 9e-6 under ZeRO-3, which
# feeds the matmuls from gathered copies); later steps differ in the order of the gradient-norm and reduction
# arithmetic, about 1e-7 relative. AdamW's normalised steps turn that into whole steps for the weights whose
# gradient is rounding noise (the key projections' bias has no gradient in exact arithmetic: softmax ignores it),
# so weights are compared by their update from the start: measured over 4 steps, the difference is 0.04% (ZeRO-2)
# and 0.11% (ZeRO-3) of the whole update and at most 0.3% and 0.9% of any tensor's; losses within 8e-6 relative.
LOSS_TOLERANCE = {"rtol": 3e-5, "atol": 0.0}
UPDATE_TOLERANCE = {"whole": 5e-3, "tensor": 5e-2}


def _arguments(task: Path, output: Path, stage: int, **overrides) -> list[str]:
    settings = {**SETTINGS, **overrides, "deepspeed": str(CONFIGS[0].with_name(f"zero{stage}.json"))}
    return ["train", "--stage", "3", "--data", str(task / "data.json"), "--model", str(task / "tiny"),
            "--output", str(output), *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]]


def _logged_losses(checkpoint: Path) -> torch.Tensor:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    losses = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    assert [step for step, _ in losses] == list(range(1, len(losses) + 1)), losses
    return torch.tensor([loss for _, loss in losses], dtype=torch.float64)


def _assert_same_weights(found: Path, expected: Path, initial: Path) -> None:
    """The weights in `found` made the update from `initial` that those in `expected` made (official layouts)."""
    found, expected, initial = (load_file(str(folder / "model.safetensors")) for folder in (found, expected, initial))
    assert found.keys() == expected.keys() == initial.keys()
    update = {key: (expected[key] - initial[key]).norm() for key in expected}
    error = {key: (found[key] - expected[key]).norm() for key in expected}
    worst = max(expected, key=lambda key: error[key] / update[key].clamp_min(1e-12))
    assert error[worst] <= UPDATE_TOLERANCE["tensor"] * update[worst], (worst, error[worst], update[worst])
    whole = torch.stack(list(error.values())).norm() / torch.stack(list(update.values())).norm()
    assert whole <= UPDATE_TOLERANCE["whole"], whole


def _assert_partitioned(checkpoint: Path, stage: int, trainable: int) -> None:
    """Each process's optimizer file holds its half of the fp32 master weights (ZeRO-1/2/3); under ZeRO-3 the
    module state each process saves holds no weights at all (they live in the partitions)."""
    step = checkpoint / f"global_step{checkpoint.name.split('-')[1]}"
    held = []
    for rank in (0, 1):
        state = torch.load(step / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", weights_only=False)
        groups = state["optimizer_state_dict"]["fp32_flat_groups" if stage == 3 else "single_partition_of_fp32_groups"]
        held.append(sum(group.numel() for group in groups))
    assert trainable <= sum(held) <= trainable + 64 and held[0] == held[1], (held, trainable)
    if stage == 3:
        module = torch.load(step / "zero_pp_rank_0_mp_rank_00_model_states.pt", weights_only=False)["module"]
        assert sum(value.numel() for value in module.values()) == 0


@pytest.fixture(scope="module")
def single(task, tmp_path_factory) -> Path:
    """The reference: one process, no DeepSpeed, 2 micro-batches of 1 accumulated per step."""
    output = tmp_path_factory.mktemp("single") / "out"
    train(task / "tiny", task / "data.json", output, load_stage(3, {**SETTINGS, "grad_accum": 2}), progress=False)
    return output


@pytest.fixture(scope="module")
def trainable(task) -> int:
    return sum(p.numel() for p in hico.load(task / "tiny").model.parameters())  # stage 3 trains every part


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_passes_deepspeeds_parser(path, tmp_path) -> None:
    from deepspeed.runtime import constants
    from deepspeed.runtime.zero.config import ZERO_OPTIMIZATION

    raw = json.loads(path.read_text())
    # DeepSpeed ignores top-level keys it does not know; they must be among the names its constants define
    known = {value for value in vars(constants).values() if isinstance(value, str)} | {ZERO_OPTIMIZATION}
    assert set(raw) <= known, set(raw) - known
    args = training_arguments(load_stage(3, SETTINGS), tmp_path)
    parsed = zero.check_config(zero.load_config(path), args)
    assert parsed.zero_optimization_stage == int(path.stem[-1]) and parsed.gradient_clipping == args.max_grad_norm
    assert parsed.train_micro_batch_size_per_gpu == SETTINGS["batch_size"] and not parsed.bfloat16_config.enabled
    if parsed.zero_optimization_stage == 3:  # gathered at a save: checkpoints in the official layout
        assert parsed.zero_config.gather_16bit_weights_on_model_save


def test_a_misspelt_config_fails_with_deepspeeds_message(tmp_path) -> None:
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3, "overlap_com": True}}))
    config = zero.load_config(path)
    assert config["zero_optimization"][zero.GATHER] is True  # turned on for a ZeRO-3 config that lacks it
    args = training_arguments(load_stage(3, SETTINGS), tmp_path)
    with pytest.raises(OptionError, match="overlap_com.*Extra inputs are not permitted"):
        zero.check_config(config, args)
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 3, "zero_optimization": {"stage": 2}}))
    with pytest.raises(OptionError, match="train_micro_batch_size_per_gpu=3 vs hf per_device_train_batch_size=1"):
        zero.check_config(zero.load_config(path), args)


def test_a_process_without_a_launcher_is_told_to_use_one(monkeypatch) -> None:
    """Without torchrun's environment DeepSpeed looks for an MPI launch (mpi4py) and fails on an ImportError."""
    for name in zero.LAUNCH:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(zero.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OptionError, match="DeepSpeed runs under a launcher .*torchrun --nproc_per_node N"):
        zero.prepare(CONFIGS[0], on_gpu=False)


@pytest.mark.slow  # test_sigkill_then_resume covers the same for ZeRO-3 in `make test`, in one fewer run
@pytest.mark.parametrize("stage", [2, 3])
def test_two_processes_give_the_single_process_losses_and_weights(task, tmp_path, single, trainable, stage) -> None:
    output = tmp_path / "out"
    run = torchrun(tmp_path, *_arguments(task, output, stage))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert run.stdout.count(f"trained {STEPS} steps") == 2
    _assert_partitioned(output / f"checkpoint-{SAVE}", stage, trainable)
    expected = _logged_losses(single / f"checkpoint-{STEPS}")
    torch.testing.assert_close(_logged_losses(output / f"checkpoint-{STEPS}"), expected, **LOSS_TOLERANCE)
    assert expected[-1] < expected[0]  # it learns: the comparison is not of a flat line
    _assert_same_weights(output, single, task / "tiny")
    assert hico.load(output).tokenizer is not None


@pytest.mark.parametrize("stage, where, step", [
    pytest.param(3, "after", SAVE, marks=pytest.mark.scale),  # killed as step SAVE+1 begins, checkpoint-SAVE on disk
    pytest.param(2, "after", SAVE, marks=pytest.mark.slow),
    pytest.param(3, "during", STEPS, marks=pytest.mark.slow),  # killed writing its DeepSpeed state: resumes from SAVE
])
def test_sigkill_then_resume(task, tmp_path, single, trainable, stage, where, step) -> None:
    """Both processes SIGKILLed, then `--resume`: DeepSpeed reloads its partitions, the losses of every step and
    the final weights are the single process's, and checkpoints and output are in the official layout."""
    output = tmp_path / "run"
    killed = torchrun(tmp_path, *_arguments(task, output, stage), where=where, step=step)
    assert killed.returncode != 0 and not (output / "model.safetensors").exists(), killed.stderr[-3000:]
    assert not (output / f"checkpoint-{STEPS}" / "trainer_state.json").exists()
    assert "shm_comm" not in killed.stdout + killed.stderr  # DeepSpeed compiled no shared-memory op
    checkpoint = output / f"checkpoint-{SAVE}"
    _assert_partitioned(checkpoint, stage, trainable)
    _assert_same_weights(checkpoint, single / f"checkpoint-{SAVE}", task / "tiny")
    resumed = torchrun(tmp_path, *_arguments(task, output, stage), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    assert len([line for line in resumed.stdout.splitlines() if "'loss'" in line]) == STEPS - SAVE  # 3 and 4 only
    if where == "during":  # the half-written checkpoint was set aside, not deleted
        assert (output / f"incomplete-checkpoint-{STEPS}" / "model.safetensors").exists()
    torch.testing.assert_close(_logged_losses(output / f"checkpoint-{STEPS}"),
                               _logged_losses(single / f"checkpoint-{STEPS}"), **LOSS_TOLERANCE)
    _assert_same_weights(output, single, task / "tiny")
    assert hico.load(output).tokenizer is not None
