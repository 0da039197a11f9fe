"""The engine (`hico.api.Hico`): generate/stream/score/generate_many on a tiny random checkpoint, against
independent computations (a full prefill, the tokenizer, a plain cache), and the VideoStore's caching."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

import hico
from hico.compress import DropSchedule
from hico.engine import Request
from hico.errors import HicoError, NonFiniteError, OptionError
from hico.generate import GenerationConfig
from hico.model import reserve_cache
from hico.prompt import chat_prompt, tokenize
from hico.store import VideoStore, Wanted
from hico.synthetic import videos
from hico.synthetic.checkpoints import write_random_checkpoint
from hico.video import SamplingOptions

FOUR = SamplingOptions.plain(num_frames=4)
EIGHT = GenerationConfig(max_new_tokens=8)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> hico.Hico:
    folder = tmp_path_factory.mktemp("engine") / "tiny"
    write_random_checkpoint(folder, seed=2)
    return hico.load(folder)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("engine-videos")
    return [videos.write_video(folder / f"v{i}.mp4", 24 + 8 * i, fps=8, width=96, height=64, bits=12)
            for i in range(3)]


@pytest.fixture(scope="module")
def memory(model, clips):
    return model.encode_video(clips[0], FOUR)


def test_generate_reports_what_it_did(model, memory) -> None:
    answer = model.generate(memory, "What is shown?", config=EIGHT)
    ids = tokenize(chat_prompt("What is shown?", memory.time_msg), model.tokenizer)
    assert answer.prompt_tokens == ids.numel() - 1 + memory.tokens.shape[0] == answer.prompt_tokens
    assert answer.visual_tokens == 4 * 16
    assert answer.completion_tokens == len(answer.token_ids) <= 8
    assert answer.text == model.tokenizer.decode(list(answer.token_ids), skip_special_tokens=True).strip()
    assert answer.finish_reason == ("length" if answer.completion_tokens == 8 else "stop")
    assert answer.timings.prefill_s > 0 and answer.timings.first_token_s >= answer.timings.prefill_s
    assert model.answer(memory, "What is shown?", options=EIGHT) == answer.text


def test_greedy_tokens_equal_a_plain_decode_loop(model, memory) -> None:
    """The engine's loop (KV written in place, no per-stage hooks) against the model's checked decode on a
    stock cache, token by token."""
    answer = model.generate(memory, "Which colour?", config=GenerationConfig(max_new_tokens=12), dropout="off")
    ids = tokenize(chat_prompt("Which colour?", memory.time_msg), model.tokenizer)
    with torch.no_grad():
        embeds, span = model.model.embed(ids, memory.tokens)
        state = model.model.prefill(embeds, span)
        logits, expected = state.logits[0, -1], []
        for _ in range(len(answer.token_ids)):
            token = int(logits.argmax())
            expected.append(token)
            logits = model.model.decode(torch.tensor([[token]]), state.cache)[0, -1]
    assert list(answer.token_ids) == expected


def test_reserved_cache_writes_in_place_and_equals_concatenation(model, memory) -> None:
    ids = tokenize(chat_prompt("Where?", memory.time_msg), model.tokenizer)
    with torch.no_grad():
        embeds, span = model.model.embed(ids, memory.tokens)
        plain, reserved = model.model.prefill(embeds, span), model.model.prefill(embeds, span)
        reserve_cache(reserved.cache, 5)
        pointers = set()
        for token in (11, 12, 13, 14, 15):
            a = model.model.decode(torch.tensor([[token]]), plain.cache)
            b = model.model.decode_step(torch.tensor([[token]]), reserved.cache)
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
            pointers.add(reserved.cache.layers[0].keys.data_ptr())
    assert len(pointers) == 1  # one storage for all five tokens: no copy per token
    assert isinstance(plain.cache, DynamicCache)


def test_stream_yields_the_answer_piece_by_piece(model, memory) -> None:
    whole = model.generate(memory, "Describe it.", config=EIGHT)
    stream = model.stream(memory, "Describe it.", config=EIGHT)
    pieces = list(stream)
    assert "".join(pieces).strip() == whole.text and stream.answer == whole.__class__(**{
        **whole.__dict__, "timings": stream.answer.timings})


def test_stop_strings_end_the_answer(model, memory) -> None:
    free = model.generate(memory, "Describe it.", config=GenerationConfig(max_new_tokens=16))
    raw = model.tokenizer.decode(list(free.token_ids), skip_special_tokens=True)
    assert len(raw) >= 4, f"the random model should say something: {raw!r}"
    middle = len(raw) // 2
    stop = raw[middle:middle + 2]  # may straddle two tokens; it may also occur earlier (the first one counts)
    shown = []
    cut = model.generate(memory, "Describe it.", config=GenerationConfig(max_new_tokens=16, stop=(stop,)),
                         on_token=shown.append)
    assert cut.finish_reason == "stop" and cut.text == raw[:raw.index(stop)].strip()
    assert cut.completion_tokens < free.completion_tokens or free.finish_reason == "stop"
    assert stop not in "".join(shown) and "".join(shown).strip() == cut.text


def test_cancel_stops_generation(model, memory) -> None:
    cancel = threading.Event()
    seen = []

    def on_token(piece: str) -> None:
        seen.append(piece)
        cancel.set()

    answer = model.generate(memory, "Describe it.", config=GenerationConfig(max_new_tokens=50), cancel=cancel,
                            on_token=on_token)
    assert answer.finish_reason == "cancelled" and 1 <= answer.completion_tokens < 50
    assert model.generate(memory, "Describe it.", cancel=lambda: True).completion_tokens == 0


def test_score_is_the_teacher_forced_log_likelihood(model, memory) -> None:
    continuation = "red square"
    target = model.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = tokenize(chat_prompt("What is shown?", memory.time_msg), model.tokenizer)
    whole = torch.cat([ids, torch.tensor(target)])
    with torch.no_grad():  # one prefill of prompt + continuation, all positions' logits
        embeds, span = model.model.embed(whole, memory.tokens)
        logits = model.model.prefill(embeds, span, DropSchedule(), all_logits=True).logits[0]
    rows = logits[-len(target) - 1:-1].log_softmax(-1)
    expected = float(rows[torch.arange(len(target)), torch.tensor(target)].sum())
    got = model.likelihood(memory, "What is shown?", continuation, dropout="off")
    assert got.token_ids == tuple(target)
    assert got.logprob == pytest.approx(expected, rel=1e-4)
    assert model.score(memory, "What is shown?", continuation, dropout="off") == pytest.approx(got.logprob)
    assert got.argmax_ids == tuple(rows.argmax(-1).tolist())
    first = model.generate(memory, "What is shown?", config=GenerationConfig(max_new_tokens=1), dropout="off")
    if first.token_ids:
        assert got.argmax_ids[0] == first.token_ids[0]


def test_generate_many_keeps_order_and_reports_errors(model, memory, clips, tmp_path) -> None:
    requests = [Request(memory, "What is shown?", config=EIGHT, tag="given"),
                Request(str(clips[1]), "What is shown?", config=EIGHT, sampling=FOUR, tag="path"),
                Request(str(tmp_path / "missing.mp4"), "What?", sampling=FOUR, tag="missing"),
                Request(memory, "", tag="empty")]
    done = list(model.generate_many(requests))
    assert [d.request.tag for d in done] == ["given", "path", "missing", "empty"]
    assert done[0].ok and done[0].answer.text == model.answer(memory, "What is shown?", options=EIGHT)
    assert done[1].ok and done[1].stored.level == "encoded"
    assert not done[2].ok and "missing.mp4" in str(done[2].error)
    assert not done[3].ok and "empty" in str(done[3].error)
    again = list(model.generate_many([Request(str(clips[1]), "What is shown?", config=EIGHT, sampling=FOUR)]))
    assert again[0].stored.level == "memory" and again[0].answer == done[1].answer.__class__(
        **{**done[1].answer.__dict__, "timings": again[0].answer.timings})


def test_dropout_settings_resolve_against_the_checkpoint(model) -> None:
    config = model.model.config
    assert model.schedule(None) == model.schedule("default") == config.dropout
    assert model.schedule("off") == DropSchedule()
    schedule = DropSchedule.parse("uniform", "1,2", "1,0.5,0.25")
    assert schedule == DropSchedule("uniform", (1, 2), (1.0, 0.5, 0.25)) == model.schedule(schedule)
    assert DropSchedule.parse({"type": "attention", "layers": [1], "ratios": [1, 0.5]}) == \
        DropSchedule("attention", (1,), (1.0, 0.5))
    assert DropSchedule.parse(None) == "default" and DropSchedule.parse(True) == "model"
    assert DropSchedule.parse(False) == DropSchedule()
    with pytest.raises(OptionError, match="too deep|deeper"):
        model.schedule(DropSchedule("uniform", (99,), (1.0, 0.5)))
    for bad in ("sideways", {"type": "uniform", "layer": [1]}, 3):
        with pytest.raises(OptionError):
            DropSchedule.parse(bad)
    with pytest.raises(OptionError, match="takes no layers"):
        DropSchedule.parse("off", "1")
    with pytest.raises(OptionError, match="integers"):
        DropSchedule.parse("uniform", "1.5", "1,0.5")


def test_nonfinite_logits_while_decoding_are_an_error(model, memory, monkeypatch) -> None:
    original = model.model.decode_step

    def poisoned(ids, cache):
        return original(ids, cache) * float("nan")

    monkeypatch.setattr(model.model, "decode_step", poisoned)
    with pytest.raises(NonFiniteError, match="decoding"):
        model.generate(memory, "What?", config=GenerationConfig(max_new_tokens=4))


# ---------------------------------------------------------------- the store

def test_store_encodes_once_and_keeps_memories_in_ram_and_on_disk(model, clips, tmp_path) -> None:
    seen = []
    with VideoStore(model, cache_dir=tmp_path, on_get=seen.append) as store:
        first = store.get(clips[0], FOUR)
        second = store.get(str(clips[0]), FOUR)
        assert (first.level, second.level) == ("encoded", "memory") and second.memory is first.memory
        copy = tmp_path / "renamed.mp4"
        copy.write_bytes(clips[0].read_bytes())
        assert store.get(copy, FOUR).level == "memory"  # same bytes, another name
    assert [s.level for s in seen] == ["encoded", "memory", "memory"]
    with VideoStore(model, cache_dir=tmp_path) as fresh:  # a new session: from disk
        loaded = fresh.get(clips[0], FOUR)
        assert loaded.level == "disk" and torch.equal(loaded.memory.tokens, first.memory.tokens)
    direct = model.encode_video(clips[0], FOUR)
    assert torch.equal(direct.tokens, first.memory.tokens)


def test_store_memory_is_bounded_in_bytes(model, clips) -> None:
    with VideoStore(model, memory_bytes=0) as store:
        a = store.get(clips[0], FOUR).memory
        store.get(clips[1], FOUR)
        assert list(store.memories.values())[-1] is not a and len(store.memories) == 1
    one = a.tokens.numel() * a.tokens.element_size()
    with VideoStore(model, memory_bytes=2 * one) as store:
        for clip in clips:
            store.get(clip, FOUR)
        assert len(store.memories) == 2 and store.nbytes <= 2 * one


def test_kept_prefixes_count_against_the_budget(model, clips) -> None:
    store = VideoStore(model, memory_bytes=1 << 40)
    memory = store.get(clips[0], FOUR).memory
    model.generate(memory, "What?", config=GenerationConfig(max_new_tokens=1), dropout="off")
    assert memory.prefixes and store.nbytes > memory.tokens.numel() * memory.tokens.element_size()
    store.memory_bytes = 1
    store.get(clips[1], FOUR)
    assert len(store.memories) == 1  # the first memory (tokens and prefix) went
    previous = model.prefix_bytes
    try:
        model.prefix_bytes = 0  # a prefix larger than the budget is not kept
        other = model.encode_video(clips[2], FOUR)
        model.generate(other, "What?", config=GenerationConfig(max_new_tokens=1), dropout="off")
        assert not other.prefixes
    finally:
        model.prefix_bytes = previous
    store.close()


def test_prefetch_decodes_ahead_and_never_decodes_a_cached_video(model, clips, tmp_path, monkeypatch) -> None:
    import hico.video.reader as reader

    expected = [model.encode_video(c, FOUR).tokens for c in clips]
    with VideoStore(model, cache_dir=tmp_path) as store:
        store.prefetch([Wanted(str(c), FOUR) for c in clips])
        got = [store.get(str(c), FOUR) for c in clips]
    assert [g.level for g in got] == ["encoded"] * 3
    assert all(torch.equal(g.memory.tokens, e) for g, e in zip(got, expected))

    opened = []
    original = reader.Video.__init__
    monkeypatch.setattr(reader.Video, "__init__", lambda self, path, **k: opened.append(path) or
                        original(self, path, **k))
    with VideoStore(model, cache_dir=tmp_path) as store:  # everything is on disk now
        store.prefetch([Wanted(str(c), FOUR) for c in clips])
        again = [store.get(str(c), FOUR) for c in clips]
    assert [g.level for g in again] == ["disk"] * 3 and opened == []


def test_prefetch_passes_over_videos_never_asked_for(model, clips) -> None:
    with VideoStore(model, memory_bytes=0) as store:
        store.prefetch([Wanted(str(c), FOUR) for c in clips], workers=1, budget=1)
        last = store.get(str(clips[2]), FOUR)  # the first two were never asked for
        assert last.level == "encoded"
        assert torch.equal(last.memory.tokens, model.encode_video(clips[2], FOUR).tokens)


def test_an_unreadable_prefetched_video_is_an_error_for_that_video_only(model, clips, tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    with VideoStore(model) as store:
        store.prefetch([Wanted(str(broken), FOUR), Wanted(str(clips[0]), FOUR)])
        with pytest.raises(HicoError, match="broken.mp4"):
            store.get(str(broken), FOUR)
        assert store.get(str(clips[0]), FOUR).level == "encoded"


def test_the_readme_example_runs(clips, tmp_path, monkeypatch, capsys) -> None:
    """README's engine example, as printed, on the embedded model and three synthetic videos."""
    from hico.embedded import embedded_path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The engine: `generate`"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", 10)]
    for name, clip in (("talk.mp4", clips[0]), ("a.mp4", clips[1]), ("b.mp4", clips[2])):
        code = code.replace(f'"{name}"', repr(str(clip)))
    code = code.replace('"path/to/checkpoint"', repr(str(embedded_path())))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "stop" in printed or "length" in printed
    assert list((tmp_path / "cache").glob("*.safetensors"))  # the store's disk cache


def test_store_hashes_a_file_once_until_it_changes(model, clips, tmp_path, monkeypatch) -> None:
    import hico.store as store_module

    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clips[0].read_bytes())
    hashed = []
    original = store_module.content_digest
    monkeypatch.setattr(store_module, "content_digest", lambda path: hashed.append(path) or original(path))
    with VideoStore(model) as store:
        first = store.get(copy, FOUR)
        assert store.get(copy, FOUR).memory is first.memory and len(hashed) == 1
        copy.write_bytes(clips[1].read_bytes())  # other bytes under the same name: hashed again, encoded again
        changed = store.get(copy, FOUR)
        assert len(hashed) == 2 and changed.level == "encoded" and changed.memory is not first.memory
