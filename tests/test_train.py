"""Training on CPU with a tiny model and generated videos: the loss falls on a learnable task and the saved
checkpoint answers; resume equals an uninterrupted run; LoRA merges exactly; 2 processes (gloo) work;
skipped samples are counted; stage presets and overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import hico
from hico.compress import DropSchedule
from hico.errors import OptionError
from hico.model import IMAGE_TOKEN_INDEX
from hico.synthetic import videos
from hico.synthetic.checkpoints import random_model, tiny_official_config, write_random_checkpoint
from hico.train import dataset as dataset_module
from hico.train.dataset import ConversationDataset, TrainingDataError, collate, prepare
from hico.train.data import load_conversations
from hico.train.engine import TrainingModel, build_model
from hico.train.run import train
from hico.train.stages import load_stage, parse_overrides
from hico.video import SamplingOptions
from hico.video.worker import WorkerClient
from train_support import FAST, KILLER, task  # noqa: F401  (task: a fixture)

COLOURS, QUESTION = videos.COLOURS, videos.COLOUR_QUESTION


def _config(**overrides):
    return load_stage(2, {**FAST, **overrides})


def test_loss_falls_and_the_checkpoint_answers(task, tmp_path) -> None:
    # Answer-only labels: under the official rule (the default) 28 steps of this tiny model learn the ChatML
    # structure first, and it answered "<|im_start|>assistant\n" over and over (measured).
    config = _config(max_steps=28, labels="answers")
    result = train(task / "tiny", task / "data.json", tmp_path / "out", config, progress=False)
    losses = [loss for _, loss in result.losses]
    assert result.steps == 28 and losses[-1] < 0.3 * losses[0]
    model = hico.load(tmp_path / "out")  # official layout: config.json + model.safetensors + tokenizer
    sampling = SamplingOptions(policy="dynamic_fps1", max_num_frames=8, min_num_frames=4, local_num_frames=4)
    answers = [model.chat(task / f"{i}.mp4", QUESTION, sampling) for i in range(4)]
    assert answers == list(COLOURS)
    assert json.loads((tmp_path / "out" / "skips.json").read_text())["total"] == 16


class _Interrupt(TrainerCallback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            control.should_training_stop = True


KILL_CONFIG = {"max_steps": 6, "save_steps": 3}  # the resume test's run: checkpoints 3 and 6


def _train_command(task, output: Path, *extra: str) -> list[str]:
    settings = [f"{k}={v}" for k, v in {**FAST, **KILL_CONFIG}.items()]
    return ["train", "--stage", "2", "--data", str(task / "data.json"), "--model", str(task / "tiny"),
            "--output", str(output), *[a for s in settings for a in ("--set", s)], *extra]


@pytest.fixture(scope="module")
def uninterrupted(task, tmp_path_factory) -> dict[str, torch.Tensor]:
    output = tmp_path_factory.mktemp("whole") / "out"
    train(task / "tiny", task / "data.json", output, _config(**KILL_CONFIG), progress=False)
    return load_file(str(output / "model.safetensors"))


def test_resume_continues_as_if_never_stopped(task, tmp_path, uninterrupted) -> None:
    config = _config(**KILL_CONFIG)
    stopped = tmp_path / "stopped"
    train(task / "tiny", task / "data.json", stopped, config, progress=False, callbacks=[_Interrupt(3)])
    for name in ("model.safetensors", "config.json"):  # a crash would not have written the final model
        (stopped / name).unlink()
    with pytest.raises(OptionError, match="pass --resume"):
        train(task / "tiny", task / "data.json", stopped, config, progress=False)
    result = train(task / "tiny", task / "data.json", stopped, config, resume=True, progress=False)
    assert result.steps == 6 and [s for s, _ in result.losses] == [4]  # steps 4-6 only: logging every 4
    whole, resumed = uninterrupted, load_file(str(stopped / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("where, step", [
    ("after", 3),  # killed in step 4, after checkpoint-3 is on disk
    pytest.param("during", 6, marks=pytest.mark.slow),  # killed writing checkpoint-6: resumes from 3
])
def test_sigkill_then_resume_gives_the_uninterrupted_weights(task, tmp_path, uninterrupted, where, step) -> None:
    """`hico train` killed with SIGKILL after a checkpoint (or while writing one), then resumed."""
    output = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLER, where, str(step), *_train_command(task, output)],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (output / "model.safetensors").exists()
    if where == "during":  # the half-written checkpoint has weights but no trainer state
        assert (output / "checkpoint-6" / "model.safetensors").exists()
        assert not (output / "checkpoint-6" / "trainer_state.json").exists()
        with pytest.warns(UserWarning, match="checkpoint-6 is incomplete"):
            result = train(task / "tiny", task / "data.json", output, _config(**KILL_CONFIG), resume=True,
                           progress=False)
        assert (output / "incomplete-checkpoint-6" / "model.safetensors").exists()  # set aside, not deleted
    else:
        result = train(task / "tiny", task / "data.json", output, _config(**KILL_CONFIG), resume=True,
                       progress=False)
    assert result.steps == 6 and [s for s, _ in result.losses] == [4]  # steps 4-6 only: logging every 4
    final = load_file(str(output / "model.safetensors"))
    assert final.keys() == uninterrupted.keys()
    for key in final:
        torch.testing.assert_close(final[key], uninterrupted[key], rtol=1e-4, atol=1e-5)


def test_lora_merge_gives_the_adapter_model_logits(task, tmp_path) -> None:
    config = _config(max_steps=4, train=["projector", "llm"], lora={"rank": 4, "alpha": 8, "dropout": 0.0})
    train(task / "tiny", task / "data.json", tmp_path / "lora", config, progress=False)
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    (tmp_path / "lora" / "chat_template.jinja").write_text(template)  # a Qwen2.5 tokenizer's own template
    result = subprocess.run([sys.executable, "-m", "hico.cli", "merge-lora", str(tmp_path / "lora"), "--out",
                             str(tmp_path / "merged")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    official = json.loads((task / "tiny" / "config.json").read_text())
    adapter_model = build_model(tmp_path / "lora", config, official).eval()  # LoRA layers kept, not merged
    assert any(".lora_A." in k for k in adapter_model.state_dict())
    merged, base = hico.load(tmp_path / "merged").model, hico.load(task / "tiny").model
    ids = torch.tensor([[1, 40, 41, 42, 2, 1, 43]])
    with torch.no_grad():
        expected = adapter_model.llm(input_ids=ids).logits
        torch.testing.assert_close(merged.llm(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)
        assert (base.llm(input_ids=ids).logits - expected).abs().max() > 1e-3  # the adapter did change something
    assert not any("lora" in k for k in load_file(str(tmp_path / "merged" / "model.safetensors")))
    assert (tmp_path / "merged" / "chat_template.jinja").read_text() == template  # vLLM would fall back without it


@pytest.fixture
def cpu_load():
    """A CPU-bound helper competing for every core while a test runs (the machine `make test` failed on)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


def _torchrun_under_load(task, output: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "hico.cli", "train",
               "--stage", "2", "--data", str(task / "data.json"), "--model", str(task / "tiny"),
               "--output", str(output), "--set", "max_steps=2", "--set", "batch_size=2",
               "--set", "grad_accum=1", "--set", "max_frames=8", "--set", "logging_steps=1",
               "--set", "save_steps=1"]  # a checkpoint every step: three saves, each one a chance to race
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("trained 2 steps") == 2, result.stdout[-2000:]
    assert hico.load(output).tokenizer is not None
    # 2 processes x batch 2 x 2 steps = 8 of the 16 samples: half an epoch (the data is sharded, not repeated)
    logs = [line for line in result.stdout.splitlines() if "'epoch'" in line]
    assert logs and "'epoch': '0.5'" in logs[-1], result.stdout[-2000:]
    for step in (1, 2):  # complete checkpoints: process zero's weights and state, both processes' RNG states
        names = {p.name for p in (output / f"checkpoint-{step}").iterdir()}
        assert {"config.json", "model.safetensors", "trainer_state.json", "optimizer.pt", "rng_state_0.pth",
                "rng_state_1.pth"} <= names, names
    assert json.loads((output / "skips.json").read_text())["total"] == 16
    leftovers = [p for p in output.rglob(".*")]
    assert not leftovers, leftovers  # no temporary file of an interrupted or doubled write


def test_two_processes_with_torchrun_gloo_under_load(task, tmp_path, cpu_load) -> None:
    _torchrun_under_load(task, tmp_path / "ddp")


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_two_processes_with_torchrun_gloo_under_load_repeated(task, tmp_path, cpu_load, attempt) -> None:
    _torchrun_under_load(task, tmp_path / "ddp")


def test_only_the_saving_process_writes_a_checkpoint(tmp_path) -> None:
    """Trainer calls `_save` on every process; before the fix every process wrote the same files."""
    from types import SimpleNamespace

    from hico.train.engine import HicoTrainer

    other = SimpleNamespace(args=SimpleNamespace(should_save=False, output_dir=str(tmp_path / "out")))
    HicoTrainer._save(other, str(tmp_path / "checkpoint-1"))
    assert not (tmp_path / "checkpoint-1").exists() and not (tmp_path / "out").exists()


def test_dropout_path_with_nothing_dropped_equals_the_stock_path(task) -> None:
    config = _config()
    samples, _ = prepare(load_conversations(task / "data.json")[:2], hico.load(task / "tiny").tokenizer, config,
                         progress=False)
    model = hico.load(task / "tiny")
    dataset = ConversationDataset(samples, model.tokenizer, config, model.model.config.vision.image_size)
    batch = collate([dataset[0], dataset[1]])
    stock = TrainingModel(model.model)(**batch)["loss"]
    keep_all = TrainingModel(model.model, DropSchedule("uniform", (1,), (1.0, 1.0)))(**batch)["loss"]
    torch.testing.assert_close(keep_all, stock, rtol=1e-5, atol=1e-5)
    dropping = TrainingModel(model.model, DropSchedule("uniform0_attention", (1, 2), (1.0, 0.5, 0.25)))
    loss = dropping(**batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.model.projector.mlp[0].weight.grad.abs().sum() > 0


def test_skipped_samples_are_counted(task, tmp_path) -> None:
    records = json.loads((task / "data.json").read_text())[:4]
    records.append({"video": "missing.mp4", "conversations": records[0]["conversations"]})
    long_answer = " ".join(["red"] * 400)
    records.append({"conversations": [{"from": "human", "value": "Say red."}, {"from": "gpt", "value": long_answer}]})
    (task / "skips.json").write_text(json.dumps(records))
    tokenizer = hico.load(task / "tiny").tokenizer
    samples = load_conversations(task / "skips.json")
    kept, report = prepare(samples, tokenizer, _config(max_length=300, max_skip_share=0.2), progress=False)
    assert len(kept) == 4 and report.too_long == ["skips.json#5"]
    assert [s for s, _ in report.unreadable] == ["skips.json#4"] and "missing.mp4" in report.unreadable[0][1]
    with pytest.raises(TrainingDataError, match="1 of 6 samples have unreadable media"):
        prepare(samples, tokenizer, _config(max_length=300, max_skip_share=0.1), progress=False)


def test_stage_presets_and_overrides() -> None:
    one, four = load_stage(1), load_stage(4)
    assert one.train == ("projector",) and one.lr == 1e-3 and one.template == "plain" and one.max_frames == 4
    assert four.train == ("vision", "projector") and four.high_res and four.vision_lr == 2e-6
    assert load_stage(3).min_frames == 64 and load_stage(3).max_frames == 512
    overrides = parse_overrides(["lr=2e-5", "lora.rank=8", "train=[projector, llm]"])
    assert overrides == {"lr": 2e-5, "lora": {"rank": 8}, "train": ["projector", "llm"]}
    config = load_stage(3, overrides)
    assert config.lr == 2e-5 and config.lora.rank == 8 and config.train == ("projector", "llm")
    with pytest.raises(OptionError, match="unknown training settings \\['learning_rate'\\]"):
        load_stage(2, {"learning_rate": 1})
    with pytest.raises(OptionError, match="unknown stage"):
        load_stage(7)
    with pytest.raises(OptionError, match="min_frames <= max_frames"):
        load_stage(2, {"min_frames": 16})


def test_train_cli_errors_are_one_line(task, tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "hico.cli", "train", "--stage", "7", "--data",
                             str(task / "data.json"), "--model", str(task / "tiny"), "--output", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "unknown stage" in result.stderr


def test_stage_one_trains_only_the_projector(task, tmp_path) -> None:
    config = load_stage(1, {**FAST, "max_steps": 2, "lr": 1e-3})
    train(task / "tiny", task / "data.json", tmp_path / "s1", config, progress=False)
    before, after = hico.load(task / "tiny").model.state_dict(), hico.load(tmp_path / "s1").model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"projector"}


def test_stage_four_trains_the_tower_at_double_resolution_and_freezes_the_llm(task, tmp_path) -> None:
    config = load_stage(4, {**FAST, "max_steps": 2, "min_frames": 4, "max_frames": 8})
    train(task / "tiny", task / "data.json", tmp_path / "hd", config, progress=False)
    saved = json.loads((tmp_path / "hd" / "config.json").read_text())
    assert saved["mm_vision_tower"] == "umt-hd-large" and saved["vision_config"]["image_size"] == 128
    before, after = hico.load(task / "tiny").model.state_dict(), hico.load(tmp_path / "hd").model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("llm."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vision."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("projector."))


def test_image_and_text_only_samples(task, tmp_path) -> None:
    from PIL import Image

    Image.new("RGB", (40, 30), COLOURS["blue"]).save(tmp_path / "blue.png")
    records = [{"image": "blue.png", "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"},
                                                        {"from": "gpt", "value": "blue"}]},
               {"conversations": [{"from": "human", "value": "Say red."}, {"from": "gpt", "value": "red"}]}]
    (tmp_path / "mixed.json").write_text(json.dumps(records))
    model = hico.load(task / "tiny")
    samples, _ = prepare(load_conversations(tmp_path / "mixed.json"), model.tokenizer, _config(), progress=False)
    dataset = ConversationDataset(samples, model.tokenizer, _config(), model.model.config.vision.image_size)
    image, text = dataset[0], dataset[1]
    assert image["clips"].shape == (1, 4, 3, 64, 64) and torch.equal(image["clips"][0, 0], image["clips"][0, 3])
    assert text["clips"] is None
    loss = TrainingModel(model.model)(**collate([image, text]))["loss"]
    assert torch.isfinite(loss) and loss > 0


def test_time_message_share_and_in_process_decoding(task) -> None:
    from hico.train.dataset import time_message

    samples = load_conversations(task / "data.json")
    message = "The video lasts for 2.00 seconds."
    half = _config(time_message=0.5)
    given = [time_message(half, sample, message) for sample in samples]
    assert given == [time_message(half, sample, message) for sample in samples]  # fixed per sample
    assert set(given) == {message, None} and 4 <= given.count(None) <= 12
    assert {time_message(_config(), s, message) for s in samples} == {message}
    assert {time_message(_config(time_message=0.0), s, message) for s in samples} == {None}
    with pytest.raises(OptionError, match="time_message"):
        _config(time_message=1.5)
    tokenizer = hico.load(task / "tiny").tokenizer
    isolated, inline = _config(), _config(isolate_decode=False)
    for config in (isolated, inline):
        prepare(samples[:2], tokenizer, config, progress=False)
    first = ConversationDataset(samples, tokenizer, isolated, 64)[0]
    second = ConversationDataset(samples, tokenizer, inline, 64)[0]
    assert torch.equal(first["clips"], second["clips"]) and torch.equal(first["ids"], second["ids"])
    without = ConversationDataset(samples, tokenizer, _config(time_message=0.0), 64)[0]
    assert len(without["ids"]) < len(first["ids"])  # the time message's tokens are gone


def test_sample_without_text_guided_queries_is_not_dropped() -> None:
    """No labelled token follows an ignored one (only the first two tokens are labelled): the official code
    then does not drop, and neither does hico (it used to fail on the empty query list)."""
    model = random_model(tiny_official_config(), seed=0)
    ids = torch.tensor([5, 6, IMAGE_TOKEN_INDEX, 7, 8, 9])
    targets = torch.tensor([5, 6, -100, -100, -100, -100])
    clips = torch.randn(1, 4, 3, 64, 64)
    stock = TrainingModel(model)([ids], [targets], [clips])["loss"]
    dropping = TrainingModel(model, DropSchedule("attention", (1,), (1.0, 0.5)))([ids], [targets], [clips])["loss"]
    assert torch.isfinite(stock) and torch.equal(stock, dropping)


def test_training_dropout_reads_the_shared_vocabulary() -> None:
    """`dropout` in a stage file or `--set` takes what every --dropout takes; true/false keep their meaning."""
    def setting(*items: str):
        return load_stage(2, parse_overrides(list(items))).dropout

    assert _config().dropout == DropSchedule()  # off unless asked for, as the official training
    assert load_stage(2, {"dropout": True}).dropout == "model"
    assert load_stage(2, {"dropout": False}).dropout == DropSchedule()
    assert setting("dropout=off") == DropSchedule()  # YAML reads `off` as false: the same
    assert setting("dropout=model") == "model" and setting("dropout=default") == "default"
    assert setting("dropout={type: uniform, layers: [1], ratios: [1, 0.5]}") == \
        DropSchedule("uniform", (1,), (1.0, 0.5))
    assert setting("dropout.type=attention", "dropout.layers=[2]", "dropout.ratios=[1, 0.25]") == \
        DropSchedule("attention", (2,), (1.0, 0.25))
    with pytest.raises(OptionError, match="unknown dropout 'sideways'"):
        setting("dropout=sideways")
    with pytest.raises(OptionError, match="one ratio more than layers"):
        setting("dropout={type: uniform, layers: [1, 2], ratios: [1, 0.5]}")
    lora = load_stage(2, parse_overrides(["lora.dropout=0.25"]))  # LoRA's dropout probability is its own setting
    assert lora.lora.dropout == 0.25 and lora.dropout == DropSchedule()


class _SeeSchedule(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.schedule = model.schedule
        control.should_training_stop = True


def test_training_resolves_dropout_as_the_engine_does(task, tmp_path) -> None:
    """"model" trains with the checkpoint's llm_compress_* schedule, even with mm_llm_compress off; a schedule the
    checkpoint cannot run, or "model" where it has none, is an error before any data is read."""
    configured = {"mm_llm_compress": False, "llm_compress_type": "uniform", "llm_compress_layer_list": [1],
                  "llm_image_token_ratio_list": [1.0, 0.5]}
    write_random_checkpoint(tmp_path / "tiny", tiny_official_config(dropout=configured), seed=0)
    seen = _SeeSchedule()
    train(tmp_path / "tiny", task / "data.json", tmp_path / "out", _config(max_steps=1, dropout="model"),
          progress=False, callbacks=[seen])
    assert seen.schedule == DropSchedule("uniform", (1,), (1.0, 0.5))
    with pytest.raises(OptionError, match="sets no in-LLM dropout"):
        train(task / "tiny", task / "data.json", tmp_path / "none", _config(dropout="model"), progress=False)
    with pytest.raises(OptionError, match="deeper than 4 layers"):
        train(task / "tiny", task / "data.json", tmp_path / "deep",
              _config(dropout={"type": "uniform", "layers": [4], "ratios": [1, 0.5]}), progress=False)


def test_one_decode_worker_process_serves_every_video_of_a_process(task, monkeypatch) -> None:
    """Checking 16 videos and reading 4 starts one decode worker process, not one per video; a forked process
    (a DataLoader worker) starts its own and never uses its parent's."""
    monkeypatch.setattr(dataset_module, "_DECODERS", {})
    starts = []
    start = WorkerClient._start
    monkeypatch.setattr(WorkerClient, "_start", lambda client: (starts.append(client), start(client))[1])
    tokenizer = hico.load(task / "tiny").tokenizer
    try:
        samples, _ = prepare(load_conversations(task / "data.json"), tokenizer, _config(), progress=False)
        dataset = ConversationDataset(samples, tokenizer, _config(), 64)
        assert len(samples) == 16 and all(dataset[i]["clips"] is not None for i in range(4))
        client = dataset_module.decoder()
        assert starts == [client] and client.proc.poll() is None
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a DataLoader worker process as fork starts it
            child = dataset_module.decoder()
            os.write(writer, b"own" if child is not client and child.proc is None else b"parent's")
            os._exit(0)
        os.close(writer)
        os.waitpid(pid, 0)
        with os.fdopen(reader, "rb") as answer:
            assert answer.read() == b"own"
    finally:
        for client in dataset_module._DECODERS.values():
            client.close()
