"""`hico serve` through the official openai client: a live server subprocess on 127.0.0.1 with an API key and
the embedded model, answering about demo videos whose picture (colour and shape) the video writer reports."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from serve_support import demo_video, start_server

KEY = "test-key-0123456789"
QUESTION = "Describe the picture in the video."
DEMO_FRAMES = 96  # 1 fps: the official ~1 fps policy samples all 96 (a multiple of 8, within 64-512)
TOKENS_PER_FRAME = 16  # 64 tokens per 4-frame clip after merging


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-api")
    return {seed: demo_video(folder / f"demo{seed}.mp4", seed) for seed in (0, 1, 2)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-api-cache")


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache):
    live = start_server(tmp_path_factory.mktemp("serve-api-server"), "--cache", str(cache), key=KEY)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def uploaded(client, videos):
    demo = videos[0]
    with open(demo.path, "rb") as handle:
        file = client.files.create(file=handle, purpose="vision")
    return file, demo.colour, demo.shape


def ask(url: str, question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["hico-embedded"]
    status, _, body = server.request("GET", "/health", key=None)  # open: load balancers probe it without a key
    assert status == 200 and b'"ok"' in body


def test_upload_then_plain_answer(client, uploaded):
    file, colour, shape = uploaded
    assert file.id.startswith("file-") and file.bytes > 0
    reply = client.chat.completions.create(model="hico-embedded", messages=ask(f"hico://files/{file.id}"))
    answer = reply.choices[0].message.content
    assert colour in answer and shape in answer, answer
    assert reply.choices[0].finish_reason == "stop"
    plan = reply.model_extra["hico"]
    assert plan["frames"] == DEMO_FRAMES and plan["times"][:3] == [0.0, 1.0, 2.0]
    assert "96.00 seconds" in plan["time_msg"]
    assert reply.usage.prompt_tokens_details.model_extra["visual_tokens"] == DEMO_FRAMES * TOKENS_PER_FRAME
    # the prompt counts the visual tokens plus the text around the one placeholder (at least the question)
    assert reply.usage.prompt_tokens > DEMO_FRAMES * TOKENS_PER_FRAME + 8
    assert reply.usage.completion_tokens >= 2


def test_streamed_answer_matches_plain(client, uploaded):
    file, _, _ = uploaded
    messages = ask(f"hico://files/{file.id}")
    plain = client.chat.completions.create(model="hico-embedded", messages=messages).choices[0].message.content
    chunks = list(client.chat.completions.create(model="hico-embedded", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) >= 2  # it really streams, piece by piece
    assert "".join(pieces) == plain
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.prompt_tokens > DEMO_FRAMES * TOKENS_PER_FRAME


def test_second_turn_encodes_nothing(server, client, videos, cache):
    from hico.memory import file_digest, memory_key
    from hico.video.sampling import SamplingOptions

    url = "data:video/mp4;base64," + base64.b64encode(videos[1].path.read_bytes()).decode()
    encodes = server.metric("hico_video_encodes_total")
    first = client.chat.completions.create(model="hico-embedded", messages=ask(url))
    assert server.metric("hico_video_encodes_total") == encodes + 1
    assert first.model_extra["hico"]["cache"] == "encoded"
    # kept on disk under the key `hico chat --cache` uses: content hash, sampling, image size, model fingerprint
    card = json.loads(server.request("GET", "/v1/models")[2])["data"][0]["hico"]
    key = memory_key(file_digest(videos[1].path), SamplingOptions(), card["image_size"], card["fingerprint"])
    assert (cache / f"{key}.safetensors").exists()
    assert len(list(cache.glob("*.safetensors"))) == server.metric("hico_video_encodes_total")
    hits = server.metric("hico_video_cache_hits_total")
    history = ask(url) + [{"role": "assistant", "content": first.choices[0].message.content},
                          {"role": "user", "content": "What colour is it?"}]
    second = client.chat.completions.create(model="hico-embedded", messages=history)
    assert server.metric("hico_video_encodes_total") == encodes + 1
    assert server.metric("hico_video_cache_hits_total") == hits + 1
    assert second.model_extra["hico"]["cache"] == "memory"
    assert second.choices[0].message.content
    # the history is in the prompt: the second turn's prompt is longer by at least the first answer
    assert second.usage.prompt_tokens >= first.usage.prompt_tokens + first.usage.completion_tokens


def test_sampling_options_ride_under_hico(client, uploaded):
    file, _, _ = uploaded
    reply = client.chat.completions.create(model="hico-embedded", messages=ask(f"hico://files/{file.id}"),
                                           max_tokens=1, extra_body={"hico": {"num_frames": 8, "end": 48}})
    plan = reply.model_extra["hico"]
    assert plan["frames"] == 8 and max(plan["times"]) < 48
    assert reply.usage.prompt_tokens_details.model_extra["visual_tokens"] == 8 * TOKENS_PER_FRAME
    assert reply.usage.completion_tokens == 1 and reply.choices[0].finish_reason == "length"


def test_an_image(client, videos):
    import av

    demo = videos[2]
    with av.open(str(demo.path)) as container:  # the picture's frame, cut out of the demo video as a PNG
        frame = next(f for i, f in enumerate(container.decode(video=0)) if i == demo.first + 1)
    out = io.BytesIO()
    frame.to_image().save(out, "PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    reply = client.chat.completions.create(model="hico-embedded", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]}])
    assert reply.usage.prompt_tokens_details.model_extra["visual_tokens"] == 64  # one image = one 4-frame clip
    assert reply.model_extra["hico"]["frames"] == 1
    assert reply.choices[0].message.content


def test_stop_string_cuts_the_answer(client, uploaded):
    file, colour, shape = uploaded
    reply = client.chat.completions.create(model="hico-embedded", messages=ask(f"hico://files/{file.id}"),
                                           stop=[f" {shape}"])
    assert reply.choices[0].message.content == f"a {colour}"
    assert reply.choices[0].finish_reason == "stop"


def test_dropout_settings_resolve_against_the_checkpoint(client, uploaded):
    file, _, _ = uploaded
    messages = ask(f"hico://files/{file.id}")

    def answer(dropout) -> str:
        reply = client.chat.completions.create(model="hico-embedded", messages=messages, max_tokens=8,
                                               extra_body={"hico": {"dropout": dropout}})
        return reply.choices[0].message.content

    given = {str(d): answer(d) for d in ("default", "model", "off", {"type": "uniform", "layers": [1],
                                                                        "ratios": [1, 0.5]})}
    assert all(given.values()), given
    # the embedded checkpoint turns its configured schedule on: "default" (as when none is given) and "model" agree
    assert given["default"] == given["model"] == client.chat.completions.create(
        model="hico-embedded", messages=messages, max_tokens=8).choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:  # 4 layers: nothing to drop after the last one
        answer({"type": "uniform", "layers": [4], "ratios": [1, 0.5]})
    assert caught.value.body["param"] == "hico.dropout" and caught.value.body["code"] == "invalid_value"
    assert "deeper than 4 layers" in caught.value.body["message"]


def test_wrong_or_missing_key_is_401(server, videos):
    for key in (None, "wrong-key-0123456789", KEY + "x"):
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "none", max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError) as caught:
            list(bad.models.list())
        assert caught.value.body["code"] == "invalid_api_key"
    for path in ("/metrics", "/v1/files", "/v1/models"):
        assert server.request("GET", path, key=None)[0] == 401
    assert server.request("GET", "/metrics")[0] == 200


def test_a_request_past_its_timeout_is_504(server, client, uploaded):
    file, _, _ = uploaded
    with pytest.raises(openai.APIStatusError) as caught:  # 1 ms: less than any prefill of 1,536 visual tokens
        client.chat.completions.create(model="hico-embedded", messages=ask(f"hico://files/{file.id}"),
                                       extra_body={"hico": {"timeout": 0.001}})
    assert caught.value.status_code == 504 and caught.value.body["code"] == "request_timeout"
    assert server.metric("hico_requests_cancelled_total") >= 1
    assert server.request("GET", "/health")[0] == 200


def test_a_stream_whose_client_leaves_cancels_its_job():
    from hico.generate import GenerationOptions
    from hico.serve.app import EventStream
    from hico.serve.protocol import ChatRequest
    from hico.serve.worker import Job
    from hico.video.sampling import SamplingOptions

    async def scenario() -> tuple[Job, list]:
        request = ChatRequest(model=None, question="?", history=(), media=(), options=GenerationOptions(),
                              sampling=None, dropout=None, stream=True)
        job = Job(request, (), SamplingOptions(), asyncio.get_running_loop(), time.monotonic() + 60)
        sent = []

        async def receive():
            return {"type": "http.disconnect"}  # the client is gone; the job never produces text

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(EventStream(job, "m", {})({"type": "http"}, receive, send), timeout=30)
        return job, sent

    job, sent = asyncio.run(scenario())
    assert job.cancelled.is_set()  # the worker stops this generation at its next token
    assert all(m.get("more_body", False) for m in sent if m["type"] == "http.response.body")  # no [DONE] sent
