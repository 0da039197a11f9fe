"""hico.live: a stream encoded clip by clip as it arrives, questions answered from the ready cache. Without a budget
the answers equal `Hico.generate` on a memory of the same frames (identical ids); with one, the visual tokens in
the cache never exceed it, the newest clips are never evicted, and positions stay bounded past the model's
position range; the evicted cache is the one a fresh prefill would give at the new positions (layer 0)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import hico
from hico.embedded import WEIGHTS
from hico.errors import HicoError, OptionError
from hico.memory import VideoMemory
from hico.synthetic.tasks import write_demo_video
from hico.video.preprocess import preprocess
from hico.video.reader import Video
from hico.video.sampling import SamplingOptions, time_message

QUESTION = "Describe the picture in the video."
CONFIG = hico.GenerationConfig(max_new_tokens=12)


@pytest.fixture(scope="module")
def model() -> hico.Hico:
    return hico.load(WEIGHTS)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[np.ndarray]:
    path = tmp_path_factory.mktemp("live") / "stream.mp4"
    write_demo_video(path, frames=48, seed=3)
    with Video(path) as video:
        return [f.pixels for f in video.frames(video.plan(SamplingOptions.plain(fps=1.0)))]


def reference(model: hico.Hico, frames: list[np.ndarray], question: str = QUESTION) -> hico.Answer:
    """hico's own answer on a memory of the same whole clips, with the time message of their duration."""
    size = model.model.config.vision.image_size
    clips = [preprocess(frames[i:i + 4], size) for i in range(0, len(frames) // 4 * 4, 4)]
    count = 4 * len(clips)
    memory = VideoMemory(tokens=model.encode_clip_batch(clips), indices=list(range(count)),
                         times=[float(i) for i in range(count)], time_msg=time_message(float(count), count),
                         duration=float(count), source="frames", key="")
    return model.generate(memory, question, dropout="off", config=CONFIG)


def test_answers_equal_hicos_on_the_same_frames_at_every_moment(model, frames) -> None:
    live = model.live(fps=1.0)
    for i, frame in enumerate(frames[:22]):
        assert live.push(frame, float(i))
    first = live.generate(QUESTION, config=CONFIG)
    assert first.token_ids == reference(model, frames[:20]).token_ids  # 5 whole clips; 2 frames wait for theirs
    for i, frame in enumerate(frames[22:], start=22):
        live.push(frame, float(i))
    later = live.generate("What colour is the picture?", config=CONFIG)
    assert later.token_ids == reference(model, frames, "What colour is the picture?").token_ids
    assert live.kept_tokens == 64 * (len(frames) // 4) and live.num_frames == len(frames)


def test_frames_are_taken_at_the_target_rate(model, frames) -> None:
    live = model.live(fps=0.5)
    taken = [live.push(frames[0], t / 10) for t in range(0, 100)]  # 10 fps for 10 s
    assert sum(taken) == 5 and [i for i, took in enumerate(taken) if took] == [0, 20, 40, 60, 80]
    assert live.seconds == 10.0


def test_a_question_while_frames_keep_arriving(model, frames) -> None:
    live = model.live(fps=1.0)
    for i in range(8):
        live.push(frames[i], float(i))
    stop = threading.Event()

    def feed() -> None:
        i = 8
        while not stop.is_set():
            live.push(frames[i % len(frames)], float(i))
            i += 1

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        answers = [live.generate(QUESTION, config=CONFIG) for _ in range(3)]
    finally:
        stop.set()
        feeder.join()
    assert all(a.finish_reason in ("stop", "length") and a.completion_tokens > 0 for a in answers)


@pytest.mark.parametrize("score", ["value_norm", "random"])
def test_the_budget_is_never_exceeded_and_the_newest_clips_stay(model, frames, score) -> None:
    live = model.live(fps=1.0, budget_tokens=512, score=score)
    sizes = []
    for i in range(200):
        live.push(frames[i % len(frames)], float(i))
        assert live.kept_tokens <= 512
        sizes.append(live.memory_bytes)
    clips = live._clips
    kept = live._clip_of
    for newest in range(clips - 4, clips):
        assert kept.count(newest) == 64
    assert max(sizes[-40:]) <= 1.5 * min(sizes[-40:])  # bounded, not growing with the stream
    assert live.generate(QUESTION, config=CONFIG).completion_tokens > 0


@pytest.mark.parametrize("budget", [None, 512])
def test_memory_bytes_counts_the_kept_tokens_not_the_reserved_storage(model, frames, budget) -> None:
    """The cache reserves room by doubling (and keeps it after a compaction); memory_bytes is what the kept
    tokens use: their keys and values in every layer (and the prompt text's before them) plus the held tokens."""
    live = model.live(fps=1.0, budget_tokens=budget)
    for i in range(84):  # 21 clips: 1,344 visual tokens, more than 512 and past a doubling (1,024 -> 2,048)
        live.push(frames[i % len(frames)], float(i))
    config = model.model.llm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_position = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * 4  # float32 keys, values
    kept = live.kept_tokens
    assert kept == (budget or 21 * 64)
    assert live.memory_bytes == (live._text_tokens + kept) * per_position + kept * config.hidden_size * 4
    if budget is None:
        reserved = sum(store.nbytes for layer in live._cache.layers for store in layer.stores)
        assert reserved > (live._text_tokens + kept) * per_position


def test_a_stream_longer_than_the_position_range(model, frames) -> None:
    """Past max_position_embeddings frames (67,584 positions = 4,224 frames of 16 tokens): with a budget the kept
    tokens take contiguous positions again, so the cache never holds more than text + budget positions."""
    limit = model.model.llm.config.max_position_embeddings
    live = model.live(fps=1.0, budget_tokens=1024)
    frames_needed = limit // 16 + 200
    for i in range(frames_needed):
        live.push(frames[i % len(frames)], float(i))
    assert live.num_frames * 16 > limit
    assert live._cache.get_seq_length() <= live._text_tokens + 1024
    answer = live.generate(QUESTION, config=CONFIG)
    assert answer.completion_tokens > 0
    seen = live._clips * 4  # the time message tells the whole stream, not what the budget kept
    assert live.memory().time_msg == time_message(float(seen), seen)


def test_without_a_budget_the_range_is_refused_with_what_to_do(model, frames) -> None:
    live = model.live(fps=1.0)
    live._limit = live._text_tokens + 512 + 3 * 64  # as if the model's range ended after 3 clips
    with pytest.raises(HicoError, match="budget_tokens"):
        for i in range(64):
            live.push(frames[i % len(frames)], float(i))


def test_compacted_keys_equal_a_fresh_prefill_at_the_new_positions(model, frames) -> None:
    """Layer 0's keys depend on each token and its position only: after eviction and re-positioning they must be
    what the kept tokens give when prefilled at their new, contiguous positions."""
    live = model.live(fps=1.0, budget_tokens=256, keep_recent_clips=2)
    for i in range(40):
        live.push(frames[i], float(i))
    ids = live._prefix_ids
    embeds, span = model.model.embed(ids, live._visual())
    with torch.inference_mode():
        fresh = model.model.prefill_prefix(embeds, span, hico.DropSchedule())
    got = live._cache.layers[0].keys
    assert got.shape == fresh.kv[0][0].shape
    assert torch.allclose(got, fresh.kv[0][0], atol=1e-4, rtol=1e-4)
    assert torch.equal(live._cache.layers[0].values, fresh.kv[0][1])


def test_bad_input_is_a_clear_error(model) -> None:
    live = model.live()
    with pytest.raises(HicoError, match="at least 4 frames"):
        live.generate(QUESTION)
    with pytest.raises(HicoError, match="uint8"):
        live.push(np.zeros((8, 8, 3), dtype=np.float32), 0.0)
    with pytest.raises(OptionError, match="newest clips"):
        model.live(budget_tokens=100)
    with pytest.raises(OptionError, match="fps"):
        model.live(fps=0)
    with pytest.raises(HicoError, match="no-such-stream"):
        live.push_video("/tmp/no-such-stream.mp4")


def test_push_video_reads_a_file_at_the_target_rate(model, tmp_path) -> None:
    path = tmp_path / "file.mp4"
    write_demo_video(path, frames=24, seed=5)
    live = model.live(fps=0.5)
    assert live.push_video(path) == 12 and live.kept_tokens == 3 * 64


def test_hico_live_answers_questions_from_stdin(tmp_path) -> None:
    path = tmp_path / "cli.mp4"
    write_demo_video(path, frames=32, seed=6)
    result = subprocess.run([sys.executable, "-m", "hico.cli", "live", str(path), "--fast", "--wait"],
                            input=QUESTION + "\n", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
    missing = subprocess.run([sys.executable, "-m", "hico.cli", "live", str(tmp_path / "none.mp4"), "--fast"],
                             input="", capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "none.mp4" in missing.stderr and "Traceback" not in missing.stderr


def test_a_budget_with_dropout_says_it_evicts_at_random(model) -> None:
    """Value norms come from the prefilled cache; with a dropout schedule there is none until a question."""
    with pytest.warns(UserWarning, match="evicts at random"):
        model.live(fps=1.0, budget_tokens=512, dropout="default")
