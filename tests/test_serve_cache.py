"""The server's video cache: one memory per content and sampling, encoded through one kept decode process."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

import hico
from hico.embedded import embedded_path
from hico.errors import HicoError
from hico.memory import file_digest
from hico.serve.cache import VideoCache
from hico.serve.files import Media
from hico.serve.metrics import Metrics
from hico.video.sampling import SamplingOptions
from serve_support import demo_video


def test_one_decode_process_serves_every_video_and_survives_a_broken_one(tmp_path):
    demos = [demo_video(tmp_path / f"demo{seed}.mp4", seed, seconds=16) for seed in (0, 1)]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    media = [Media(p, "video", file_digest(p), p.name) for p in (demos[0].path, demos[1].path, broken)]
    model = hico.load(embedded_path())
    cache = VideoCache(model, Metrics(), capacity=4, cache_dir=None, decode_timeout=30)
    sampling = SamplingOptions()
    try:
        first = cache.get([media[0]], sampling)
        pid = cache.decoder.proc.pid
        second = cache.get([media[1]], sampling)
        assert (first.level, second.level) == ("encoded", "encoded")
        assert first.memory.num_frames == second.memory.num_frames == 16
        assert not first.memory.tokens.equal(second.memory.tokens)
        assert cache.decoder.proc.pid == pid  # the same process read both videos
        assert cache.get([media[0]], sampling).level == "memory"

        with pytest.raises(HicoError):
            cache.get([media[2]], sampling)
        plain = SamplingOptions.plain(num_frames=8)
        again = cache.get([media[1]], plain)  # a fresh process after the failure, the same pixels
        assert again.level == "encoded" and cache.decoder.proc.pid != pid
        in_process = model.encode_video(demos[1].path, plain, isolate=False)
        assert again.memory.tokens.equal(in_process.tokens)
    finally:
        cache.close()
    assert cache.decoder.proc is None
