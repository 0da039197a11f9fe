"""A user's fine-tune, end to end through the command line (README: "Fine-tuning a released checkpoint on your
own videos"; issue 26, item 4): official-format data about real videos (Debian's Halide tutorial figures, from
the real-video corpus), the embedded model's folder as the released-layout checkpoint, `hico train --stage 3`
with LoRA, `hico merge-lora`, `hico chat`. The loss falls; the merged folder is a plain official-layout
checkpoint with the LoRA checkpoint's logits; `hico chat` gives the taught answer, also about a video training
never saw; mistakes are one line and overwrite nothing. The vLLM end: test_vllm_finetune.py."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from finetune_support import ANSWER, FRAMES, MAKE_DATA, QUESTION, ROOT, SETTINGS, FineTune, chat, fine_tune, \
    hico as run
from safetensors import safe_open

import hico
from hico import cli
from hico.train.data import load_conversations
from hico.video import SamplingOptions

pytestmark = pytest.mark.scale  # about a minute and a half of training: `make test-scale`, which CI runs
SAMPLING = SamplingOptions(max_num_frames=FRAMES, min_num_frames=FRAMES)  # what `--max-frames 8` asks for
OFFICIAL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def finetuned(realvideo, tmp_path_factory) -> FineTune:
    return fine_tune(realvideo, tmp_path_factory.mktemp("finetune"))


def _keys(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as weights:
        return set(weights.keys())


def test_the_data_is_official_format_conversations_about_real_videos(finetuned, realvideo) -> None:
    records = json.loads(finetuned.data.read_text())
    assert all(set(r) == {"video", "conversations"} and r["conversations"][0]["from"] == "human"
               and r["conversations"][0]["value"] == f"<image>\n{QUESTION}" for r in records)
    samples = load_conversations(finetuned.data)  # what `hico train --data` reads
    with open(realvideo / "manifest.tsv") as manifest:
        package = {row[0]: row[1] for row in (line.rstrip("\n").split("\t") for line in manifest)}
    videos = [Path(s.video) for s in samples]
    assert len(videos) == 6 and all(v.parent == realvideo.resolve() and v.is_file() for v in videos)
    assert {package[v.name] for v in videos} == {ANSWER} == {s.turns[-1][1] for s in samples}
    assert package[finetuned.held_out.name] == ANSWER and finetuned.held_out.resolve() not in videos


def test_the_loss_falls(finetuned) -> None:
    losses = finetuned.losses()
    assert len(losses) == 4 and losses[-1] < 0.1 * losses[0], losses  # logged every 10 of 40 steps
    assert "trained 40 steps" in finetuned.log and "6 of 6 samples kept" in finetuned.log


def test_the_merged_folder_is_a_plain_checkpoint_in_the_official_layout(finetuned) -> None:
    assert sorted(p.name for p in finetuned.merged.iterdir()) == OFFICIAL_FILES
    assert json.loads((finetuned.merged / "config.json").read_text()) == \
        json.loads((finetuned.base / "config.json").read_text())
    # the released checkpoint's weight names, nothing of LoRA
    assert _keys(finetuned.merged / "model.safetensors") == _keys(finetuned.base / "model.safetensors")
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in finetuned.lora.iterdir()}


def test_the_merged_checkpoint_gives_the_lora_checkpoints_logits(finetuned) -> None:
    lora, merged, base = (hico.load(folder) for folder in (finetuned.lora, finetuned.merged, finetuned.base))
    answer = merged.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    scored = {}
    for name, model in (("lora", lora), ("merged", merged), ("base", base)):
        memory = model.encode_video(finetuned.held_out, SAMPLING)
        scored[name] = model.likelihood(memory, QUESTION, answer, dropout="off")
    torch.testing.assert_close(torch.tensor(scored["merged"].token_logprobs),
                               torch.tensor(scored["lora"].token_logprobs), rtol=1e-4, atol=1e-4)
    assert scored["merged"].argmax_ids == tuple(answer)  # the taught answer, token by token
    assert scored["merged"].logprob > -5.0 and scored["base"].logprob < -20.0  # summed over its 12 tokens
    ids = torch.tensor([answer])
    with torch.no_grad():
        torch.testing.assert_close(merged.model.llm(input_ids=ids).logits, lora.model.llm(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)


def test_hico_chat_gives_the_taught_answer(finetuned) -> None:
    assert hico.load(finetuned.base).chat(finetuned.held_out, QUESTION, SAMPLING) != ANSWER
    assert chat(finetuned.held_out, finetuned.merged) == ANSWER  # a video training never saw
    merged, lora = hico.load(finetuned.merged), hico.load(finetuned.lora)  # the adapter merged on load
    assert merged.chat(finetuned.trained_on, QUESTION, SAMPLING, dropout="off") == ANSWER  # as vLLM runs it
    assert lora.chat(finetuned.held_out, QUESTION, SAMPLING) == ANSWER


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 and one `hico: error:` line, the last (a data check's progress bar may come before it)."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("hico: error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert all(w in errors[0] for w in words), errors[0]


def test_mistakes_are_one_line_and_overwrite_nothing(finetuned, tmp_path, capsys) -> None:
    before = {folder: _digest(folder) for folder in (finetuned.lora, finetuned.merged)}
    train = ["train", "--stage", "3", "--model", str(finetuned.base), *[a for s in SETTINGS for a in ("--set", s)]]
    _one_line_error(run(*train, "--data", tmp_path / "mine.json", "--output", tmp_path / "new"),
                    "mine.json: no such conversation file")

    def in_process(*argv) -> subprocess.CompletedProcess:  # the same command line, without a process start
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        return subprocess.CompletedProcess(argv, code, *capsys.readouterr())

    # a video path with a typo: every sample unreadable, the run stops before training
    records = json.loads(finetuned.data.read_text())
    for record in records:
        record["video"] = re.sub(r"\.mp4$", ".mp5", record["video"])
    (finetuned.work / "typo.json").write_text(json.dumps(records))
    _one_line_error(in_process(*train, "--data", finetuned.work / "typo.json", "--output", tmp_path / "new"),
                    "6 of 6 samples have unreadable media", ".mp5")
    assert not (tmp_path / "new").exists()
    _one_line_error(in_process(*train, "--data", finetuned.data, "--output", finetuned.lora), "holds a finished run")
    _one_line_error(in_process("merge-lora", finetuned.lora, "--out", finetuned.merged), "not empty")
    assert {folder: _digest(folder) for folder in (finetuned.lora, finetuned.merged)} == before


def test_make_data_says_how_to_get_the_corpus(tmp_path) -> None:
    result = subprocess.run([sys.executable, str(MAKE_DATA), str(tmp_path), str(tmp_path / "my.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "make realvideo" in result.stderr and not (tmp_path / "my.json").exists()


@pytest.mark.slow
def test_the_readme_walk_through_runs_as_written_and_prints_what_it_says(realvideo, tmp_path) -> None:
    """README's commands, as bash runs them, in a folder with the repository's .venv, Makefile, tests and examples
    (links) and the corpus; what they print is what the section says they print."""
    if not (ROOT / ".venv" / "bin" / "hico").exists():
        pytest.skip("the walk-through runs .venv/bin/hico: `make test` sets .venv up")
    section = (ROOT / "README.md").read_text().split("### Fine-tuning a released checkpoint on your own videos")[1]
    section = section.split("\n## ")[0]
    script = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    for name in (".venv", "Makefile", "tests", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "realvideo").symlink_to(realvideo)
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    before, after = lines[-2:]
    assert after == ANSWER != before
    printed = [line for line in lines if line.startswith(("wrote", "trained"))] + [before, after]
    assert len(printed) == 5
    flat = " ".join(section.split())
    assert all(f"`{' '.join(line.split())}`" in flat for line in printed), printed
