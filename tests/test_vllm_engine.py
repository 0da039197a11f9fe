"""`VllmEngine` (hico.vllm.engine) behind the engine interface, and `hico eval --engine vllm` / `hico serve --engine
vllm` on it: the same answers as hico's own engine with in-LLM dropout off, errors on their completions, streaming
and cancelling.

Runs in .venv-vllm (`make test-vllm`); skipped where vLLM is not installed."""

from __future__ import annotations

import gc
import json
import threading
import time

import pytest

pytest.importorskip("vllm")

import openai  # noqa: E402
from serve_support import demo_video, start_server  # noqa: E402
from vllm_support import KV_CACHE_BYTES, MAX_MODEL_LEN  # noqa: E402

import hico  # noqa: E402
from hico.cli import main  # noqa: E402
from hico.embedded import WEIGHTS  # noqa: E402
from hico.engine import Request  # noqa: E402
from hico.errors import OptionError  # noqa: E402
from hico.synthetic.benchmarks import write_benchmark  # noqa: E402
from hico.video.sampling import SamplingOptions  # noqa: E402

ENGINE_ARGS = {"kv_cache_memory_bytes": KV_CACHE_BYTES, "max_model_len": MAX_MODEL_LEN, "enforce_eager": True}
CONFIG = hico.GenerationConfig(max_new_tokens=16)


@pytest.fixture(scope="module")
def engines():
    from hico.vllm.engine import VllmEngine

    engine = VllmEngine(WEIGHTS, **ENGINE_ARGS)
    yield engine, hico.load(WEIGHTS)
    engine.llm.llm_engine.engine_core.shutdown()
    del engine
    gc.collect()


def test_generate_many_answers_as_hicos_engine_with_errors_on_completions(engines, tmp_path) -> None:
    engine, own = engines
    videos = [demo_video(tmp_path / f"v{i}.mp4", seed=i, seconds=24).path for i in range(3)]
    memory = own.encode_video(videos[0], SamplingOptions.plain(max_frames=8))
    requests = [Request(videos[1], "Describe the picture in the video.", config=CONFIG, dropout="off"),
                Request(tmp_path / "missing.mp4", "Anything?", config=CONFIG, dropout="off"),
                Request(memory, "What colour is the picture?", config=CONFIG, dropout="off"),
                Request(videos[2], "And this one?", history=(("Describe it.", "a red square"),), config=CONFIG,
                        dropout="off", sampling=SamplingOptions.plain(max_frames=16))]
    got = list(engine.generate_many(requests))
    expected = list(own.generate_many(requests))
    assert [c.request for c in got] == requests
    assert not got[1].ok and "missing.mp4" in str(got[1].error) and not expected[1].ok
    for mine, theirs in zip(got, expected):
        if theirs.ok:
            assert mine.ok, mine.error
            assert mine.answer.token_ids == theirs.answer.token_ids
            assert mine.answer.text == theirs.answer.text
            assert mine.answer.prompt_tokens == theirs.answer.prompt_tokens
            assert mine.answer.visual_tokens == theirs.answer.visual_tokens


def test_generate_streams_and_cancels(engines, tmp_path) -> None:
    engine, own = engines
    memory = own.encode_video(demo_video(tmp_path / "v.mp4", seed=4, seconds=24).path)
    pieces: list[str] = []
    answer = engine.generate(memory, "Describe the picture in the video.", on_token=pieces.append, config=CONFIG)
    assert "".join(pieces).strip() == answer.text == own.generate(memory, "Describe the picture in the video.",
                                                                  dropout="off", config=CONFIG).text
    stopped = engine.generate(memory, "Describe it.", cancel=threading.Event().is_set, config=CONFIG)
    assert stopped.finish_reason == "stop"
    cancel = threading.Event()
    cancel.set()
    assert engine.generate(memory, "Describe it.", cancel=cancel, config=CONFIG).finish_reason == "cancelled"
    with pytest.raises(OptionError, match="dropout off"):
        engine.generate(memory, "Describe it.", dropout="model")


def test_eval_with_engine_vllm_gives_hicos_results(tmp_path) -> None:
    bench = write_benchmark(tmp_path, "mvbench", items=4)
    base = ["eval", bench.task, "--annotations", str(bench.annotations), "--video-root", str(bench.videos),
            "--max-frames", "8", "--no-progress"]
    vllm_args = [f"--vllm-arg={k}={json.dumps(v)}" for k, v in ENGINE_ARGS.items()]
    assert main(base + ["--out", str(tmp_path / "vllm"), "--engine", "vllm", *vllm_args]) == 0
    assert main(base + ["--out", str(tmp_path / "hico")]) == 0
    keep = ("id", "status", "response", "score", "frames", "model")
    results = {name: [{k: r[k] for k in keep} for r in map(json.loads, (tmp_path / name / "results.jsonl").open())]
               for name in ("vllm", "hico")}
    assert len(results["vllm"]) == 4 and results["vllm"] == results["hico"]


def vllm_processes() -> set[int]:
    import psutil

    found = set()
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith("VLLM"):
            found.add(process.pid)
    return found


def test_serve_with_engine_vllm_answers_as_hico_chat(tmp_path) -> None:
    """... and a server stopped by SIGTERM leaves no vLLM process behind (uvicorn ends the process right after
    the app's lifespan, which stops the engine's processes)."""
    before = vllm_processes()
    video = demo_video(tmp_path / "served.mp4", seed=9, seconds=32).path
    expected = hico.load(WEIGHTS).chat(video, "Describe the picture in the video.", dropout="off")
    server = start_server(tmp_path, "--engine", "vllm", "--allow-path", str(tmp_path),
                          *[f"--vllm-arg={k}={json.dumps(v)}" for k, v in ENGINE_ARGS.items()])
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=300)
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{video}"}},
                                                 {"type": "text", "text": "Describe the picture in the video."}]}]
        reply = client.chat.completions.create(model="hico-embedded", messages=messages, temperature=0, max_tokens=64)
        assert reply.choices[0].message.content.strip() == expected
        stream = client.chat.completions.create(model="hico-embedded", messages=messages, temperature=0, max_tokens=64,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip() == expected
    finally:
        server.stop()
    deadline = time.monotonic() + 30
    while vllm_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not vllm_processes() - before
