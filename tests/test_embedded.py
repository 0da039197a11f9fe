"""The embedded toy model: the shipped files load like any checkpoint and read pictures in videos they never saw;
the recipe that makes them runs end to end (at a small scale here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from safetensors import safe_open

import hico
import hico.embedded as embedded
from hico.embedded import recipe
from hico.errors import HicoError
from hico.synthetic.pictures import COLOURS, QUESTIONS, SHAPES
from hico.synthetic.tasks import CAPTION_QUESTION, write_demo_video
from hico.video import SamplingOptions

MAX_BYTES = 25 * 2**20


def test_shipped_files_are_an_official_checkpoint_under_the_size_limit() -> None:
    folder = embedded.embedded_path()
    size = sum(path.stat().st_size for path in folder.iterdir())
    assert size <= MAX_BYTES
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["VideoChatFlashQwenForCausalLM"] and config["vocab_size"] == recipe.VOCAB
    assert config["rope_scaling"] == recipe.LONG_CONTEXT
    expected = recipe.toy_config()  # what `make tiny-model` would write, apart from install's RoPE entries
    assert {k: v for k, v in config.items() if k not in ("rope_scaling", "max_position_embeddings")} == \
        {k: v for k, v in expected.items() if k != "max_position_embeddings"}
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
    assert "model.mm_projector.mlp.0.weight" in names and "lm_head.weight" in names
    model = hico.load(folder)
    assert model.tokenizer is not None and model.model.config.vision.image_size == recipe.SIZE
    assert model.name == "embedded"  # reports and result files name it, not its folder `weights/`


def test_the_model_reads_colours_and_shapes_in_unseen_videos(tmp_path) -> None:
    model = hico.load(embedded.embedded_path())
    described = asked = 0
    for seed in range(6):
        spec, _ = write_demo_video(tmp_path / f"{seed}.mp4", frames=64, seed=1000 + seed)
        memory = model.encode_video(tmp_path / f"{seed}.mp4", SamplingOptions.plain(num_frames=64))
        words = re.fullmatch(rf"an? ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})", model.answer(memory, CAPTION_QUESTION))
        described += words is not None and words.groups() == (spec.colour, spec.shape)
        asked += all(model.answer(memory, f"Find the frame of {spec.caption(name)}. {QUESTIONS[name]}") ==
                     spec.value(name) for name in ("colour", "shape"))
    assert described >= 5 and asked >= 5  # chance is 1 in 48 each


def test_missing_model_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(embedded, "WEIGHTS", tmp_path / "gone")
    with pytest.raises(HicoError, match="make tiny-model"):
        embedded.embedded_path()


def test_chat_uses_the_embedded_model_by_default(tmp_path) -> None:
    write_demo_video(tmp_path / "demo.mp4", frames=32, seed=7)
    result = subprocess.run([sys.executable, "-m", "hico.cli", "chat", str(tmp_path / "demo.mp4"),
                             CAPTION_QUESTION], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"an? ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})", last), last


def test_recipe_runs_end_to_end_at_a_small_scale(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "hico.embedded", "--work", str(tmp_path / "work"), "--out",
                           str(tmp_path / "out"), "--scale", "0.002", "--tower-steps", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == set(embedded.FILES)
    shipped = json.loads((embedded.embedded_path() / "config.json").read_text())
    assert json.loads((out / "config.json").read_text()) == shipped  # the recipe still makes the shipped config
    steps = [step.name for step in recipe.recipe()]
    assert [p.name for p in sorted((tmp_path / "work").glob("0*"))] == ["00-init", "00-tower"] + \
        [f"{i:02d}-{name}" for i, name in enumerate(steps, 1)]
    model = hico.load(out)
    assert model.model.config.llm["rope_theta"] == recipe.toy_config()["rope_theta"]
    assert model.model.llm.config.rope_parameters["rope_type"] == "yarn"  # added at install, for inference
    assert "rope_scaling" not in json.loads((tmp_path / "work" / "03-long" / "config.json").read_text())
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert all(weights.get_tensor(k).dtype.itemsize == 2 for k in weights.keys())
    first = (out / "model.safetensors").read_bytes()
    recipe.make(tmp_path / "again", tmp_path / "work", scale=0.002, tower_steps=2, progress=False)  # resumed
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == first
    with pytest.raises(HicoError, match="other settings"):  # stages of another recipe are never resumed
        recipe.make(tmp_path / "other", tmp_path / "work", scale=0.002, progress=False)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "01-align").mkdir()
    with pytest.raises(HicoError, match="no recipe.json"):
        recipe.make(tmp_path / "other", tmp_path / "stray", scale=0.002, progress=False)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("photos", [(), ("coffee", "brick")], ids=["pictures", "pictures-and-haystack"])
def test_tower_pretraining_trains_only_the_tower_and_learns(tmp_path, photos) -> None:
    source = recipe.initial_checkpoint(tmp_path / "init")
    losses = recipe.pretrain_tower(source, tmp_path / "tower", steps=60, batch=16, progress=False, photos=photos)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10  # shape + colour (+ picture or not) loss falls
    with safe_open(str(source / "model.safetensors"), "pt") as before, \
            safe_open(str(tmp_path / "tower" / "model.safetensors"), "pt") as after:
        changed = {k for k in before.keys() if not before.get_tensor(k).equal(after.get_tensor(k))}
    assert changed and all(k.startswith("model.vision_tower.") for k in changed)
    assert hico.load(tmp_path / "tower").tokenizer is not None
