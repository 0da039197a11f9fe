"""VideoMemory files and the encode cache: size + checksum, damaged and foreign entries heal, concurrent writers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import hico
from hico.memory import MemoryFileError, VideoMemory
from hico.synthetic import videos as synth
from hico.synthetic.checkpoints import write_random_checkpoint
from hico.video import SamplingOptions

OPTIONS = SamplingOptions.plain(num_frames=8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("memory")
    write_random_checkpoint(root / "tiny", seed=3)
    video = synth.write_video(root / "v.mp4", 40, fps=10, width=128, height=80, bits=12)
    return root / "tiny", video


@pytest.fixture(scope="module")
def model(setup) -> hico.Hico:
    return hico.load(setup[0])


def _memory(key: str = "k") -> VideoMemory:
    tokens = torch.arange(2 * 16 * 8, dtype=torch.float32).reshape(32, 8) / 7
    return VideoMemory(tokens=tokens, indices=[0, 1], times=[0.0, 1.0], time_msg="m", duration=2.0, source="v",
                       key=key)


def test_round_trip_keeps_tokens_and_checks_them(tmp_path) -> None:
    path = _memory().save(tmp_path / "k.safetensors")
    again = VideoMemory.load(path, "k")
    assert torch.equal(again.tokens, _memory().tokens) and again.times == [0.0, 1.0]
    bfloat = VideoMemory(**{**_memory().__dict__, "tokens": _memory().tokens.to(torch.bfloat16)})
    assert torch.equal(VideoMemory.load(bfloat.save(tmp_path / "b.safetensors")).tokens, bfloat.tokens)
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*"))  # no temporaries left


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a hico video memory file"),
    ("flip", "do not match their size or checksum"),
    ("random", "not a hico video memory file"),
    ("empty", "not a hico video memory file"),
    ("foreign", "holds the memory of another key"),
    ("unchecked", "has no checksum"),
])
def test_damaged_entries_are_detected(tmp_path, damage, message) -> None:
    from safetensors.torch import save_file

    path = _memory().save(tmp_path / "k.safetensors")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 100])
    elif damage == "flip":  # the last bytes are token data: the file still parses, only the checksum tells
        path.write_bytes(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
    elif damage == "random":
        path.write_bytes(bytes(range(256)) * 8)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        _memory("other").save(path)
    elif damage == "unchecked":  # what an older hico wrote: no size or checksum
        meta = {k: v for k, v in _memory().__dict__.items() if k != "tokens"}
        save_file({"tokens": _memory().tokens}, str(path), metadata={"hico": json.dumps(meta)})
    with pytest.raises(MemoryFileError, match=message):
        VideoMemory.load(path, "k")


def test_a_damaged_cache_entry_is_warned_about_and_re_encoded(model, setup, tmp_path, caplog) -> None:
    video = setup[1]
    memory = model.encode_video(video, OPTIONS, cache_dir=tmp_path)
    entry = tmp_path / f"{memory.key}.safetensors"
    good = entry.read_bytes()
    size = len(good)
    for damaged in (good[: len(good) // 2], good[:-4] + b"\0\0\0\0", b"not a cache file"):
        entry.write_bytes(damaged)
        with caplog.at_level(logging.WARNING, logger="hico.memory"):
            caplog.clear()
            again = model.encode_video(video, OPTIONS, cache_dir=tmp_path)
        assert torch.equal(again.tokens, memory.tokens)
        assert any("encoding the video again" in r.getMessage() for r in caplog.records)
        # healed: the entry is whole again (same size; safetensors may order its header keys differently)
        assert entry.stat().st_size == size
        assert torch.equal(VideoMemory.load(entry, memory.key).tokens, memory.tokens)
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]


def test_two_processes_encoding_one_video_into_one_cache(setup, tmp_path) -> None:
    """Both start encoding at the same moment (a shared start file); both get the same tokens, and the cache
    holds one valid entry and no temporary file."""
    checkpoint, video = setup
    cache, go = tmp_path / "cache", tmp_path / "go"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import torch, hico
        from hico.video import SamplingOptions
        model = hico.load({str(checkpoint)!r})
        Path(sys.argv[1] + ".ready").touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        memory = model.encode_video({str(video)!r}, SamplingOptions.plain(num_frames=8), cache_dir={str(cache)!r})
        torch.save(memory.tokens, sys.argv[1])
    """)
    outputs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    workers = [subprocess.Popen([sys.executable, "-c", script, str(out)], stderr=subprocess.PIPE, text=True)
               for out in outputs]
    deadline = time.monotonic() + 240
    while not all(Path(f"{out}.ready").exists() for out in outputs):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "a worker died"
        time.sleep(0.05)
    go.touch()
    errors = [w.communicate(timeout=240)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    first, second = (torch.load(out) for out in outputs)
    assert torch.equal(first, second)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    memory = VideoMemory.load(entries[0], entries[0].stem)
    assert torch.equal(memory.tokens, first)
