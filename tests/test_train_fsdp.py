"""FSDP on two real processes (torchrun, gloo, CPU) with the tiny model: the parameters are sharded, the per-step
losses and final weights equal a single process's on the same samples in the same order, sharded checkpoints
resume (after SIGKILL too) and export to the official layout that hico.load reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import hico
from hico.errors import CheckpointError, HicoError, OptionError
from hico.train.dataset import ConversationDataset
from hico.train.fsdp import SHARDS, enable_on_cpu, export_checkpoint
from hico.train.run import train
from hico.train.stages import load_stage
from train_support import FAST, read_probes, task, torchrun  # noqa: F401  (task: a fixture)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fsdp.json"
STEPS, SAVE = 4, 2
# 2 processes x 1 sample a step; the single process takes the same 2 samples a step as 2 accumulated micro-batches.
SETTINGS = {**FAST, "batch_size": 1, "grad_accum": 1, "max_steps": STEPS, "logging_steps": 1, "save_steps": SAVE}
# float32 on both sides, and the same arithmetic up to rounding: step 1 (same weights, same two samples) agrees to
# float32 rounding (measured: equal losses, grad norms 8e-8 apart). The updates then differ in the last bits
# (1.5e-8 after step 1), and AdamW turns such differences in elements whose gradient is near zero into
# differences of up to a fraction of a step (its update is about lr * sign(gradient) there): measured over 4
# steps, losses 8e-6 and grad norms 2e-4 apart (relative), the weights' difference 0.11% of what training moved
# them. The same single-process run on 1 thread and on 2 differs by 0.04% (the kernels' own rounding).
FIRST_STEP = {"rtol": 1e-6, "atol": 0.0}
LOSS_TOLERANCE = {"rtol": 1e-4, "atol": 0.0}
GRAD_NORM_TOLERANCE = {"rtol": 1e-3, "atol": 0.0}
MOVED_SHARE = 0.01  # the weights' difference, against the change training made, in Frobenius norm
EXACT = {"rtol": 1e-4, "atol": 1e-5}  # the same run on the same processes, resumed: rounding only


def _arguments(task: Path, output: Path, **overrides) -> list[str]:
    settings = {**SETTINGS, **overrides, "fsdp": "full_shard auto_wrap", "fsdp_config": str(CONFIG)}
    return ["train", "--stage", "3", "--data", str(task / "data.json"), "--model", str(task / "tiny"),
            "--output", str(output), *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]]


def _logged(checkpoint: Path, name: str = "loss") -> list[tuple[int, float]]:
    """(step, value) of a logged figure, full precision, from a checkpoint's trainer state."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry[name]) for entry in history if name in entry]


def _assert_close(found: list[float], expected: list[float], tolerance: dict) -> None:
    torch.testing.assert_close(torch.tensor(found, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                               **tolerance)


def _weights(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(folder / name))


def _assert_same_weights(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert found.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(found[key], expected[key], **EXACT)


def _assert_same_training(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                          start: dict[str, torch.Tensor]) -> None:
    """Two runs of the same training: their weights differ by a small share of what training changed."""
    assert found.keys() == expected.keys()
    difference = torch.cat([(found[k] - expected[k]).flatten() for k in expected])
    moved = torch.cat([(expected[k] - start[k]).flatten() for k in expected if k in start])
    assert moved.norm() > 0 and difference.norm() <= MOVED_SHARE * moved.norm(), difference.norm() / moved.norm()


@pytest.fixture(scope="module")
def single(task, tmp_path_factory) -> SimpleNamespace:
    """The reference: one process, no FSDP, 2 micro-batches of 1 accumulated per step; records the data order."""
    output, order = tmp_path_factory.mktemp("single") / "out", []
    getitem = ConversationDataset.__getitem__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ConversationDataset, "__getitem__", lambda self, i: (order.append(int(i)), getitem(self, i))[1])
        result = train(task / "tiny", task / "data.json", output, load_stage(3, {**SETTINGS, "grad_accum": 2}),
                       progress=False)
    return SimpleNamespace(output=output, losses=result.losses, order=order)


@pytest.fixture(scope="module")
def sharded(task, tmp_path_factory) -> SimpleNamespace:
    """`hico train` under torchrun: 2 processes, FSDP2 full sharding, sharded checkpoints every 2 steps."""
    root = tmp_path_factory.mktemp("fsdp")
    run = torchrun(root, *_arguments(task, root / "out"), probes=root / "probes")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return SimpleNamespace(output=root / "out", probes=read_probes(root / "probes"), stdout=run.stdout)


def test_each_process_holds_half_of_every_wrapped_layer(sharded) -> None:
    for part in ("llm_layer", "tower_block", "model"):
        held = [probe["shares"][part][0] for probe in sharded.probes]
        total = sharded.probes[0]["shares"][part][1]
        assert sum(held) == total and all(0.45 * total <= h <= 0.55 * total for h in held), (part, held, total)
    checkpoint = sharded.output / f"checkpoint-{SAVE}"
    assert {p.name for p in (checkpoint / SHARDS).glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    assert not (checkpoint / "model.safetensors").exists()  # shards only: nothing gathered at a checkpoint
    with pytest.raises(CheckpointError, match="hico export-checkpoint"):
        hico.load(checkpoint)
    assert (checkpoint / "optimizer_0" / ".metadata").is_file()
    model = hico.load(sharded.output)  # the run's output: gathered, official layout
    assert model.tokenizer is not None and sharded.stdout.count(f"trained {STEPS} steps") == 2


def test_two_processes_give_the_single_process_losses_and_weights(task, single, sharded) -> None:
    # Step s: samples 2s and 2s+1 of one seeded permutation, on process 0 and 1. (Each data loader reads one
    # batch ahead, so a process's list ends with a sample no step used.)
    rank0, rank1 = (probe["order"] for probe in sharded.probes)
    interleaved, used = [i for pair in zip(rank0, rank1) for i in pair][: 2 * STEPS], single.order[: 2 * STEPS]
    assert interleaved == used and len(set(used)) == 2 * STEPS
    found, expected = sharded.output / f"checkpoint-{STEPS}", single.output / f"checkpoint-{STEPS}"
    losses, reference = [v for _, v in _logged(found)], [v for _, v in _logged(expected)]
    assert [s for s, _ in _logged(found)] == [s for s, _ in single.losses] == list(range(1, STEPS + 1))
    assert reference == [v for _, v in single.losses] and reference[-1] < reference[0]  # it learns
    norms, reference_norms = [v for _, v in _logged(found, "grad_norm")], [v for _, v in _logged(expected, "grad_norm")]
    _assert_close(losses[:1] + norms[:1], reference[:1] + reference_norms[:1], FIRST_STEP)
    _assert_close(losses, reference, LOSS_TOLERANCE)
    _assert_close(norms, reference_norms, GRAD_NORM_TOLERANCE)  # a gradient summed, not averaged, fails here
    _assert_same_training(_weights(sharded.output), _weights(single.output), _weights(task / "tiny"))


@pytest.mark.scale
def test_sigkill_after_a_sharded_checkpoint_then_resume(task, tmp_path, sharded) -> None:
    output = tmp_path / "run"
    killed = torchrun(tmp_path, *_arguments(task, output), where="after", step=SAVE)  # both processes, step 3
    assert killed.returncode != 0 and not (output / "model.safetensors").exists(), killed.stderr[-3000:]
    assert (output / f"checkpoint-{SAVE}" / "trainer_state.json").exists()
    assert not (output / f"checkpoint-{STEPS}").exists()
    resumed = torchrun(tmp_path, *_arguments(task, output), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    losses = [line for line in resumed.stdout.splitlines() if "'loss'" in line]
    assert len(losses) == STEPS - SAVE, resumed.stdout[-2000:]  # steps 3 and 4 only
    _assert_same_weights(_weights(output), _weights(sharded.output))


def _export(checkpoint: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hico.cli", "export-checkpoint", str(checkpoint), "--out", str(out)],
                          capture_output=True, text=True)


def test_export_a_sharded_checkpoint_to_the_official_layout(task, tmp_path, single, sharded) -> None:
    out = tmp_path / "exported"
    result = _export(sharded.output / f"checkpoint-{SAVE}", out)  # the command, once; the function below
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert hico.load(out).tokenizer is not None
    # the single process's checkpoint of the same step, saved gathered in the official layout
    _assert_same_training(_weights(out), _weights(single.output / f"checkpoint-{SAVE}"), _weights(task / "tiny"))
    # The last step's shards, read in one process, are the weights the run gathered across processes at its end.
    found, gathered = _weights(export_checkpoint(sharded.output / f"checkpoint-{STEPS}", tmp_path / "last")), \
        _weights(sharded.output)
    assert found.keys() == gathered.keys() and all(torch.equal(found[k], gathered[k]) for k in found)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(HicoError, match="not empty"):
        export_checkpoint(sharded.output / f"checkpoint-{SAVE}", out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing overwritten
    with pytest.raises(HicoError, match="already in the official layout"):
        export_checkpoint(single.output / f"checkpoint-{SAVE}", tmp_path / "plain")


def test_fsdp_is_turned_on_only_for_cpu_processes_and_only_fsdp2() -> None:
    from accelerate.utils import DistributedType

    def accelerator(kind):
        return SimpleNamespace(state=SimpleNamespace(distributed_type=kind))

    assert not enable_on_cpu(accelerator(DistributedType.MULTI_GPU), {"fsdp_version": 2})  # accelerate's own
    assert not enable_on_cpu(accelerator(DistributedType.NO), {"fsdp_version": 2})  # one process: nothing to shard
    assert not enable_on_cpu(accelerator(DistributedType.MULTI_CPU), None)  # FSDP not asked for
    with pytest.raises(OptionError, match="needs FSDP2"):
        enable_on_cpu(accelerator(DistributedType.MULTI_CPU), {"fsdp_version": 1})


@pytest.mark.slow
def test_lora_with_fsdp(task, tmp_path) -> None:
    """LoRA adapters sharded with their frozen base layers (FSDP2 shards each parameter, trainable or not): the
    losses equal a single process's, the final output and an exported checkpoint carry the adapter."""
    lora = {"train": "[projector, llm]", "lora.rank": 4, "lora.alpha": 8, "lora.dropout": 0.0}
    run = torchrun(tmp_path, *_arguments(task, tmp_path / "fsdp", max_steps=SAVE, **lora))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    config = load_stage(3, {**SETTINGS, "max_steps": SAVE, "grad_accum": 2, "train": ["projector", "llm"],
                            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}})
    single = train(task / "tiny", task / "data.json", tmp_path / "single", config, progress=False)
    _assert_close([v for _, v in _logged(tmp_path / "fsdp" / f"checkpoint-{SAVE}")], [v for _, v in single.losses],
                  LOSS_TOLERANCE)
    start = load_file(str(task / "tiny" / "model.safetensors"))
    _assert_same_training(_weights(tmp_path / "fsdp"), _weights(tmp_path / "single"), start)
    adapter = "adapter_model.safetensors"
    initial = {k: torch.zeros_like(v) for k, v in _weights(tmp_path / "single", adapter).items()}
    _assert_same_training(_weights(tmp_path / "fsdp", adapter), _weights(tmp_path / "single", adapter), initial)
    out = tmp_path / "exported"
    result = _export(tmp_path / "fsdp" / f"checkpoint-{SAVE}", out)
    assert result.returncode == 0, result.stderr
    for name in ("model.safetensors", adapter):  # the last step's shards: the gathered output exactly
        found, gathered = _weights(out, name), _weights(tmp_path / "fsdp", name)
        assert found.keys() == gathered.keys() and all(torch.equal(found[k], gathered[k]) for k in found)
    assert json.loads((out / "adapter_config.json").read_text()) == \
        json.loads((tmp_path / "fsdp" / "adapter_config.json").read_text())
    hico.load(out)  # merges the adapter on load
