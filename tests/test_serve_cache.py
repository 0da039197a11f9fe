"""The server's video store (the engine's VideoStore): one memory per content and sampling, under the key
`hico chat --cache` uses, encoded through one kept decode process, held in RAM within a byte budget (and an
optional count), and counted in the server's metrics at every level."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

import hico
from hico.checkpoint import HicoConfig
from hico.embedded import embedded_path
from hico.errors import HicoError
from hico.memory import file_digest, memory_key
from hico.serve.cache import ServeStore
from hico.serve.cli import MEMORY_CACHE_MB
from hico.serve.files import Media
from hico.serve.metrics import Metrics
from hico.store import MEMORY_BYTES, memory_nbytes
from hico.video.sampling import SamplingOptions
from serve_support import demo_video


@pytest.fixture(scope="module")
def model():
    return hico.load(embedded_path())


IMAGE_SIZE = HicoConfig.from_folder(embedded_path()).vision.image_size  # the tower's input, from config.json


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-cache")
    return [demo_video(folder / f"demo{seed}.mp4", seed, seconds=16) for seed in (0, 1)]


def videos(demos) -> list[Media]:
    return [Media(d.path, "video", file_digest(d.path), d.path.name) for d in demos]


def store(model, metrics: Metrics, **settings) -> ServeStore:
    return ServeStore(model, **{"cache_dir": None, "memory_bytes": MEMORY_BYTES, "max_videos": None,
                                "decode_timeout": 30, "on_get": metrics.count_stored, **settings})


def counted(metrics: Metrics) -> dict:
    value = metrics.registry.get_sample_value
    return {"encoded": value("hico_video_encodes_total"),
            "memory": value("hico_video_cache_hits_total", {"level": "memory"}) or 0.0,
            "disk": value("hico_video_cache_hits_total", {"level": "disk"}) or 0.0,
            "timed": value("hico_encode_seconds_count")}


def test_one_decode_process_serves_every_video_and_survives_a_broken_one(model, demos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    media = [*videos(demos), Media(broken, "video", file_digest(broken), "broken.mp4")]
    metrics = Metrics()
    cache = store(model, metrics)
    sampling = SamplingOptions()
    try:
        first = cache.fetch([media[0]], sampling)
        decoder = cache.decoder
        pid = decoder.proc.pid
        second = cache.fetch([media[1]], sampling)
        assert (first.level, second.level) == ("encoded", "encoded")
        assert first.memory.num_frames == second.memory.num_frames == 16
        assert not first.memory.tokens.equal(second.memory.tokens)
        assert first.memory.source == "demo0.mp4"  # the client's name, not the server's path
        assert cache.decoder.proc.pid == pid  # the same process read both videos
        again = cache.fetch([media[0]], sampling)
        assert again.level == "memory" and again.memory is first.memory
        assert counted(metrics) == {"encoded": 2, "memory": 1, "disk": 0, "timed": 2}

        with pytest.raises(HicoError):
            cache.fetch([media[2]], sampling)
        plain = SamplingOptions.plain(num_frames=8)
        fresh = cache.fetch([media[1]], plain)  # a fresh process after the failure, the same pixels
        assert fresh.level == "encoded" and cache.decoder.proc.pid != pid
        in_process = model.encode_video(demos[1].path, plain, isolate=False)
        assert fresh.memory.tokens.equal(in_process.tokens)
        assert counted(metrics)["encoded"] == 3
    finally:
        cache.close()
    assert decoder.proc is None


def test_disk_entries_use_the_key_of_hico_chat_cache(model, demos, tmp_path):
    media, sampling = videos(demos)[0], SamplingOptions()
    key = memory_key(file_digest(demos[0].path), sampling, IMAGE_SIZE, model.model_id)
    metrics = Metrics()
    with store(model, metrics, cache_dir=tmp_path) as first:
        encoded = first.fetch([media], sampling)
    assert encoded.level == "encoded" and encoded.memory.key == key
    assert [p.name for p in tmp_path.glob("*.safetensors")] == [f"{key}.safetensors"]
    # `hico chat --cache` (encode_video with a cache folder) finds the server's entry instead of encoding again
    chat = model.encode_video(demos[0].path, sampling, cache_dir=tmp_path)
    assert chat.source == "demo0.mp4" and chat.tokens.equal(encoded.memory.tokens)
    with store(model, metrics, cache_dir=tmp_path) as second:  # a restarted server: RAM empty, disk kept
        loaded = second.fetch([media], sampling)
        assert loaded.level == "disk" and loaded.memory.tokens.equal(encoded.memory.tokens)
        assert second.fetch([media], sampling).level == "memory"
    assert counted(metrics) == {"encoded": 1, "memory": 1, "disk": 1, "timed": 2}


def pictures(folder, count: int) -> list[Media]:
    media = []
    for i in range(count):
        path = folder / f"picture{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        media.append(Media(path, "image", file_digest(path), path.name))
    return media


def test_images_are_one_clip_each_keyed_by_their_contents(model, tmp_path):
    media = pictures(tmp_path, 2)
    with store(model, Metrics()) as cache:
        stored = cache.fetch(media, SamplingOptions())
        assert stored.level == "encoded" and stored.memory.tokens.shape[0] == 2 * 64
        assert stored.memory.key == memory_key(f"{media[0].digest}+{media[1].digest}", "images",
                                               IMAGE_SIZE, model.model_id)
        assert stored.memory.source == "picture0.png, picture1.png" and stored.memory.time_msg == ""
        assert cache.fetch(media[::-1], SamplingOptions()).level == "encoded"  # another order, another prompt


def test_ram_is_bounded_in_bytes_and_optionally_in_videos(model, tmp_path):
    sets = [[m] for m in pictures(tmp_path, 3)]
    with store(model, Metrics()) as probe:
        size = memory_nbytes(probe.fetch(sets[0], SamplingOptions()).memory)
    with store(model, Metrics(), memory_bytes=2 * size) as by_bytes:
        for media in sets:
            by_bytes.fetch(media, SamplingOptions())
        assert len(by_bytes.memories) == 2 and by_bytes.nbytes <= 2 * size
        assert by_bytes.fetch(sets[0], SamplingOptions()).level == "encoded"  # the least recently used went
        assert by_bytes.fetch(sets[2], SamplingOptions()).level == "memory"
    with store(model, Metrics(), max_videos=1) as by_count:  # --memory-cache 1: a count on top of the budget
        for media in sets:
            by_count.fetch(media, SamplingOptions())
        assert len(by_count.memories) == 1 and by_count.fetch(sets[2], SamplingOptions()).level == "memory"
        assert by_count.fetch(sets[1], SamplingOptions()).level == "encoded"


def test_the_cli_default_budget_is_the_stores():
    assert MEMORY_CACHE_MB << 20 == MEMORY_BYTES
