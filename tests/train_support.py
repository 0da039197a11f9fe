"""Shared by the training tests: the colour task, the fast settings, and KILLER, a `hico train` that SIGKILLs
itself at a chosen step or records what its process saw (the samples in order, its share of the parameters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hico.synthetic import videos
from hico.synthetic.checkpoints import write_random_checkpoint

FAST = {"grad_accum": 1, "batch_size": 4, "min_frames": 4, "max_frames": 8, "warmup_ratio": 0.0,
        "logging_steps": 4, "save_steps": 1000, "lr": 2e-3, "vision_lr": 1e-3}


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """16 two-second videos of one solid colour each; the answer is the colour's name."""
    root = tmp_path_factory.mktemp("train")
    videos.write_colour_task(root)
    write_random_checkpoint(root / "tiny", seed=0)
    return root


# python KILLER WHERE STEP hico-arguments...: WHERE is after (killed as step STEP+1 begins, with checkpoint-STEP
# on disk), during (killed while writing checkpoint-STEP: weights written, trainer state not yet) or never.
# With HICO_TEST_PROBES set to a folder, each process writes rank<R>.json there when training ends:
# {"order": dataset indices in the order this process read them, "shares": {part: [held, total]}} with the
# parameter elements the process holds (FSDP shards) against the part's whole.
KILLER = """
import json, os, signal, sys
from pathlib import Path
from transformers import TrainerCallback
from hico import cli
from hico.train import dataset, engine, fsdp

where, step = sys.argv[1], int(sys.argv[2])
probes = os.environ.get("HICO_TEST_PROBES")
seen, shares = [], {}


class Kill(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if where == "after" and state.global_step == step:  # a checkpoint of `step` is on disk
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        hico_model = model.model
        shares.update(model=fsdp.local_share(model), llm_layer=fsdp.local_share(hico_model.llm.model.layers[0]),
                      tower_block=fsdp.local_share(hico_model.vision.blocks[0]))

    def on_train_end(self, args, state, control, **kwargs):
        if probes:
            rank = os.environ.get("RANK", "0")
            Path(probes, f"rank{rank}.json").write_text(json.dumps({"order": seen, "shares": shares}))


original = engine.HicoTrainer._save_optimizer_and_scheduler


def save_optimizer(self, output_dir):
    if where == "during" and self.state.global_step == step:  # weights written, trainer state not yet
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, output_dir)


engine.HicoTrainer._save_optimizer_and_scheduler = save_optimizer
init = engine.HicoTrainer.__init__
engine.HicoTrainer.__init__ = lambda self, *a, **k: (init(self, *a, **k), self.add_callback(Kill()))[0]
getitem = dataset.ConversationDataset.__getitem__
dataset.ConversationDataset.__getitem__ = lambda self, index: (seen.append(int(index)), getitem(self, index))[1]
sys.exit(cli.main(sys.argv[3:]))
"""


def torchrun(tmp_path: Path, *arguments: str, where: str = "never", step: int = 0, probes: Path | None = None,
             processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node PROCESSES KILLER WHERE STEP ARGUMENTS` on CPU (gloo), one thread a process."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if probes is not None:
        probes.mkdir(parents=True, exist_ok=True)
        env["HICO_TEST_PROBES"] = str(probes)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(script), where, str(step), *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def read_probes(folder: Path, processes: int = 2) -> list[dict]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(processes)]
