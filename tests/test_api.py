"""End to end on a tiny random checkpoint: encode a synthetic video once, ask twice, memory on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hico
from hico.compress import DropSchedule
from hico.generate import GenerationOptions
from hico.memory import VideoMemory
from hico.synthetic import videos
from hico.synthetic.checkpoints import write_random_checkpoint
from hico.video import SamplingOptions

SHORT = GenerationOptions(max_new_tokens=6)
QUESTIONS = ("What colour is the square?", "Which shape appears first?", "What is in frame 3?")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> hico.Hico:
    folder = tmp_path_factory.mktemp("api") / "tiny"
    write_random_checkpoint(folder, seed=2)
    return hico.load(folder)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return videos.write_video(tmp_path_factory.mktemp("api") / "v.mp4", 90, fps=10, width=128, height=80, bits=12)


def test_encode_video_gives_16_tokens_per_frame(model, video) -> None:
    memory = model.encode_video(video, SamplingOptions.plain(num_frames=12))
    assert memory.tokens.shape == (12 * 16, model.model.config.hidden_size)
    assert memory.num_frames == 12 and len(memory.times) == 12
    assert memory.time_msg == "\nThe video lasts for 9.00 seconds, and 12 frames are uniformly sampled from it. "


def test_tokens_equal_encoding_the_clips_directly(model, video) -> None:
    from hico.video import Video

    options = SamplingOptions.plain(num_frames=8)
    memory = model.encode_video(video, options)
    with Video(video) as source:
        clips = torch.stack([c.pixels for c in source.clips(source.plan(options), 64)])
    with torch.no_grad():
        assert torch.equal(memory.tokens, model.model.encode_clips(clips).flatten(0, 1))


def test_second_question_does_not_touch_the_video(model, video, tmp_path, monkeypatch) -> None:
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(video.read_bytes())
    memory = model.encode_video(copy, SamplingOptions.plain(num_frames=8))
    copy.unlink()
    import hico.video.reader as reader

    monkeypatch.setattr(reader, "Video", None)  # any attempt to open a video now fails loudly
    first = model.answer(memory, "What colour is the square?", options=SHORT)
    pieces: list[str] = []
    second = model.answer(memory, "Which shape appears first?", history=[("What colour is the square?", first)],
                          options=SHORT, on_text=pieces.append)
    assert "".join(pieces).strip() == second
    assert model.answer(memory, "What colour is the square?", options=SHORT) == first  # greedy is deterministic


def test_memory_round_trip_and_cache(model, video, tmp_path, monkeypatch) -> None:
    options = SamplingOptions.plain(num_frames=8)
    memory = model.encode_video(video, options, cache_dir=tmp_path)
    saved = list(tmp_path.glob("*.safetensors"))
    assert len(saved) == 1 and saved[0].stem == memory.key
    again = VideoMemory.load(saved[0])
    assert torch.equal(again.tokens, memory.tokens) and again.time_msg == memory.time_msg
    import hico.video.reader as reader

    monkeypatch.setattr(reader, "Video", None)
    cached = model.encode_video(video, options, cache_dir=tmp_path)  # served from disk
    assert torch.equal(cached.tokens, memory.tokens)
    monkeypatch.undo()
    other = model.encode_video(video, SamplingOptions.plain(num_frames=4), cache_dir=tmp_path)
    assert other.key != memory.key and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_empty_question_is_refused(model, video) -> None:
    memory = model.encode_video(video, SamplingOptions.plain(num_frames=4))
    with pytest.raises(hico.api.HicoError, match="question is empty"):
        model.answer(memory, "  ")


@pytest.mark.parametrize("reuse_prefix", [True, False], ids=["kept-prefix", "full-prefill"])
def test_the_video_placeholder_in_user_text_is_refused(model, video, reuse_prefix, monkeypatch) -> None:
    """Typed `<image>` would stand for a second video (the kept-prefix path crashed on it with an IndexError)."""
    monkeypatch.setattr(model, "reuse_prefix", reuse_prefix)
    memory = model.encode_video(video, SamplingOptions.plain(num_frames=4))
    with pytest.raises(hico.api.HicoError, match="holds the text <image>"):
        model.answer(memory, "What is in <image>?")
    with pytest.raises(hico.api.HicoError, match="holds the text <image>"):
        model.answer(memory, "And now?", history=[("Look at <image>", "a red triangle")])


def test_checkpoint_with_yarn_rope_scaling_loads_with_its_tokenizer(tmp_path) -> None:
    """Qwen2.5 users add YaRN to config.json for long inputs; the tokenizer must not depend on parsing it."""
    import json

    folder = tmp_path / "yarn"
    write_random_checkpoint(folder, seed=2)
    config = json.loads((folder / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = hico.load(folder)
    assert loaded.tokenizer is not None and loaded.tokenizer("red")["input_ids"]
    assert loaded.model.llm.config.rope_parameters["rope_type"] == "yarn"


def test_nan_weights_fail_with_a_typed_error_not_an_empty_answer(tmp_path, video, capsys) -> None:
    from safetensors.torch import load_file, save_file

    from hico.cli import main
    from hico.errors import NonFiniteError

    folder = tmp_path / "nan"
    write_random_checkpoint(folder, seed=2)
    state = load_file(str(folder / "model.safetensors"))
    state["model.layers.1.self_attn.v_proj.weight"][3, 4] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    broken = hico.load(folder)
    memory = broken.encode_video(video, SamplingOptions.plain(num_frames=4))
    with pytest.raises(NonFiniteError, match="layer 1 .* model.layers.1.self_attn.v_proj.weight holds NaN"):
        broken.answer(memory, "What is shown?", options=SHORT)
    assert main(["chat", str(video), "What is shown?", "--model", str(folder), "--num-frames", "4"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("hico: error: non-finite values (NaN or inf) after LLM layer 1")


def _answer_ids(model, memory, question, schedule, **kwargs):
    """Greedy answer text and the first-token logits, through `Hico.prefill`."""
    from hico.prompt import chat_prompt, tokenize

    ids = tokenize(chat_prompt(question, memory.time_msg), model.tokenizer)
    return model.prefill(memory, ids, schedule, **kwargs).logits[0, -1]


@pytest.mark.parametrize("schedule", [DropSchedule(), DropSchedule("uniform0_attention", (1, 2), (1.0, 0.5, 0.25))],
                         ids=["off", "uniform0_attention"])
def test_questions_reuse_the_video_prefix_and_answer_as_a_full_prefill(model, video, schedule, monkeypatch) -> None:
    memory = model.encode_video(video, SamplingOptions.plain(num_frames=8))
    model.reuse_prefix = False
    try:
        plain = [model.answer(memory, q, options=SHORT, dropout=schedule) for q in QUESTIONS]
        plain_logits = _answer_ids(model, memory, QUESTIONS[1], schedule)
    finally:
        model.reuse_prefix = True
    calls = []
    original = model.model.prefill_prefix
    monkeypatch.setattr(model.model, "prefill_prefix", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert [model.answer(memory, q, options=SHORT, dropout=schedule) for q in QUESTIONS] == plain
    reused = _answer_ids(model, memory, QUESTIONS[1], schedule)
    assert float((reused - plain_logits).norm() / plain_logits.norm()) < 1e-5
    assert len(calls) == 1 and len(memory.prefixes) == 1  # the video's prefix was prefilled once


def test_prefix_on_disk_is_keyed_and_reused(model, video, tmp_path, monkeypatch) -> None:
    schedule = DropSchedule("uniform", (2,), (1.0, 0.5))
    memory = model.encode_video(video, SamplingOptions.plain(num_frames=8), cache_dir=tmp_path)
    first = model.answer(memory, QUESTIONS[0], options=SHORT, dropout=schedule, prefix_dir=tmp_path)
    saved = list(tmp_path.glob("*.prefix.safetensors"))
    assert len(saved) == 1
    again = model.encode_video(video, SamplingOptions.plain(num_frames=8), cache_dir=tmp_path)  # a new session
    monkeypatch.setattr(model.model, "prefill_prefix", None)  # must come from disk now
    assert model.answer(again, QUESTIONS[0], options=SHORT, dropout=schedule, prefix_dir=tmp_path) == first
    monkeypatch.undo()
    model.answer(again, QUESTIONS[0], options=SHORT, dropout=DropSchedule(), prefix_dir=tmp_path)
    assert len(list(tmp_path.glob("*.prefix.safetensors"))) == 2  # another schedule, another prefix
    saved[0].write_bytes(b"damaged")  # a damaged prefix is rebuilt, never trusted
    assert model.answer(VideoMemory.load(tmp_path / f"{memory.key}.safetensors"), QUESTIONS[0], options=SHORT,
                        dropout=schedule, prefix_dir=tmp_path) == first
