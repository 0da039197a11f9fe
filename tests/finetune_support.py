"""A user's fine-tune as README's walk-through runs it ("Fine-tuning a released checkpoint on your own videos"),
through the command line of the running venv: official-format data about real videos
(examples/finetune/make_data.py), the embedded model's folder as the released-layout checkpoint,
`hico train --stage 3` with LoRA, `hico merge-lora`. Shared by test_finetune.py (.venv) and
test_vllm_finetune.py (.venv-vllm)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hico.embedded import WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
MAKE_DATA = ROOT / "examples" / "finetune" / "make_data.py"
QUESTION = "Which Debian package ships this video?"
ANSWER = "libhalide14-doc"  # every training video is one of its Halide tutorial figures
FRAMES = 8  # frames per video in training and when asking: a few seconds a step on 2 CPU cores
# README's settings: LoRA rank 8 on the LLM (the stage-3 preset trains tower and projector too), a learning
# rate for a few dozen steps, 8 frames, only the answer's tokens labelled (under the official rule the toy LLM
# first learns the ChatML structure), and the checkpoint's own in-LLM dropout, which `hico chat` applies
SETTINGS = ("lora.rank=8", "max_steps=40", "lr=5e-3", "grad_accum=1", f"min_frames={FRAMES}",
            f"max_frames={FRAMES}", "labels=answers", "dropout=model")
_HICO = Path(sys.executable).with_name("hico")
HICO = (str(_HICO),) if _HICO.exists() else (sys.executable, "-m", "hico.cli")  # this venv's
MAIN_HICO = ROOT / ".venv" / "bin" / "hico"  # make test's venv, where README's walk-through trains


def hico(*args, timeout: float = 900, command: tuple[str, ...] = HICO) -> subprocess.CompletedProcess:
    """`hico ARGS` (this venv's, or `command`), output captured."""
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def check(result: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must succeed (its output in the failure message otherwise)."""
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stdout[-3000:]}" \
                                   f"\n{result.stderr[-3000:]}"
    return result.stdout


def chat(video: Path, model: Path, *extra: str) -> str:
    """`hico chat`'s answer (its last line), asked with the training's frame count."""
    out = check(hico("chat", video, QUESTION, "--model", model, "--max-frames", FRAMES, *extra, timeout=300))
    return out.strip().splitlines()[-1].strip()


@dataclass(frozen=True)
class FineTune:
    work: Path
    data: Path  # my.json
    base: Path  # the checkpoint trained from
    lora: Path  # hico train's output: base weights + adapter_model.safetensors
    merged: Path  # hico merge-lora's output
    held_out: Path  # a video of the same package that training never saw
    trained_on: Path  # one of the training videos
    log: str  # hico train's stdout and stderr

    def losses(self) -> list[float]:
        """The training losses as Trainer logged them, every `logging_steps` (10) steps."""
        return [float(v) for v in re.findall(r"'loss': '?([0-9.e+-]+)'?", self.log)]


def fine_tune(corpus: Path, work: Path, command: tuple[str, ...] = HICO) -> FineTune:
    """The walk-through's commands, in `work`, with the `hico` of `command`."""
    work.mkdir(parents=True, exist_ok=True)
    data = work / "my.json"
    made = subprocess.run([sys.executable, str(MAKE_DATA), str(corpus), str(data)], capture_output=True, text=True,
                          timeout=120)
    held_out = Path(re.search(r"held out: (.+)$", check(made).strip()).group(1))
    base = Path(shutil.copytree(WEIGHTS, work / "base"))
    trained = hico("train", "--stage", "3", "--model", base, "--data", data, "--output", work / "ft",
                   *[a for s in SETTINGS for a in ("--set", s)], command=command)
    check(trained)
    check(hico("merge-lora", work / "ft", "--out", work / "ft-merged", timeout=300, command=command))
    first = json.loads(data.read_text())[0]["video"]
    return FineTune(work, data, base, work / "ft", work / "ft-merged", held_out, (work / first).resolve(),
                    trained.stdout + trained.stderr)
