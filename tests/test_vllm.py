"""The vLLM plugin (hico.vllm) against hico's own path, offline through `vllm.LLM`: greedy ids identical with in-LLM
dropout off, token log-probabilities within 1e-4, on the embedded model and on each conformance fixture's tower
(UMT at 224, InternVideo2) with its LLM widened to head_dim 32 (vLLM's CPU attention takes no less; the
fixtures have 16), for prompts given as text or as chat messages with a `video_url`, a history, the sampling
options of `mm_processor_kwargs`, a batch, images, and a real video; and the plugin's vision side (frames,
tower, merging, projector, weight names) against the official code's own tensors on every fixture.

Runs in .venv-vllm (`make test-vllm`); skipped where vLLM is not installed."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

vllm = pytest.importorskip("vllm")

import hico  # noqa: E402
from hico.prompt import chat_prompt  # noqa: E402
from hico.synthetic.tasks import write_demo_video  # noqa: E402
from hico.video.sampling import SamplingOptions  # noqa: E402
from realvideo_support import realvideo_files  # noqa: E402
from vllm_support import FIXTURES, WIDE, checkpoint, engine_kwargs, hico_answer, without_stop  # noqa: E402

MODELS = ["embedded", "umt224-tiny" + WIDE, "iv2-tiny" + WIDE]
QUESTION = "Describe the picture in the video."
LOGPROB_TOLERANCE = 1e-4  # float32 on both sides; vLLM's CPU attention and GEMMs sum in another order


@pytest.fixture(scope="module")
def videos(tmp_path_factory, realvideo) -> dict[str, Path]:
    """Two synthetic videos and a real one nobody in the project made (Debian's imageio sample)."""
    folder = tmp_path_factory.mktemp("videos")
    write_demo_video(folder / "picture.mp4", frames=40, seed=3)
    write_demo_video(folder / "short.mp4", frames=9, seed=5)
    real = next(p for p in realvideo_files(realvideo) if p.name.endswith("cockatoo.mp4"))
    return {"picture": folder / "picture.mp4", "short": folder / "short.mp4", "real": real}


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_vision_side_equals_the_official_code(fixture) -> None:
    """The frames the processor sends and the model's encoding of them (uint8 normalised on the model side,
    tower, ToMe merging, projector; weights under the official names) give the fixture's `projector_out`."""
    import torch
    from safetensors.torch import load_file

    from hico.checkpoint import HicoConfig, read_safetensors
    from hico.visual import VisualEncoder
    from hico.vllm.model import encode_frames, load_visual_weights
    from hico.vllm.processor import frames_for_model

    folder = FIXTURES[fixture]
    config = HicoConfig.from_folder(folder)
    reference = load_file(str(folder / "reference.safetensors"))
    visual = VisualEncoder(config)
    loaded: set[str] = set()
    llm = list(load_visual_weights(visual, read_safetensors(folder / "model.safetensors").items(), loaded))
    assert loaded == set(dict(visual.named_parameters()))
    assert all(name.startswith(("model.", "lm_head")) for name, _ in llm)
    frames = frames_for_model(reference["frames_uint8"].to(torch.uint8).numpy(), config.vision.image_size)
    with torch.inference_mode():
        tokens = encode_frames(visual.eval(), torch.from_numpy(frames))
    expected = reference["projector_out"].reshape(tokens.shape)
    assert (tokens - expected).norm() / expected.norm() <= 1e-4


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory):
    """(hico's model, vLLM's engine) on the same checkpoint; one engine at a time (each takes a core)."""
    folder = checkpoint(request.param, tmp_path_factory.getbasetemp() / "checkpoints")
    engine = vllm.LLM(model=str(folder), limit_mm_per_prompt={"video": 1, "image": 1}, **engine_kwargs())
    yield hico.load(folder), engine
    engine.llm_engine.engine_core.shutdown()
    del engine
    gc.collect()


def greedy(max_tokens: int = 24, logprobs: int | None = 1):
    return vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=logprobs)


def assert_same(model: hico.Hico, output, reference) -> None:
    got = output.outputs[0]
    assert without_stop(got.token_ids, model.stop_ids()) == reference.token_ids
    assert len(output.prompt_token_ids) == reference.prompt_tokens
    steps = [step[token].logprob for step, token in zip(got.logprobs, got.token_ids)]
    assert np.allclose(steps[:len(reference.logprobs)], reference.logprobs, atol=LOGPROB_TOLERANCE, rtol=0)
    assert got.text.strip() == reference.text


@pytest.mark.parametrize("video", ["picture", "real"])
def test_text_prompt_gives_hicos_greedy_ids(pair, videos, video) -> None:
    model, engine = pair
    reference = hico_answer(model, videos[video], QUESTION)
    prompt = chat_prompt(QUESTION, None)  # `<image>\n{question}`: the plugin adds the time message
    output = engine.generate([{"prompt": prompt, "multi_modal_data": {"video": str(videos[video])}}],
                             greedy())[0]
    assert_same(model, output, reference)


def test_prompt_layout_is_the_official_one(pair, videos) -> None:
    """16 placeholders per frame where hico's prompt has -200, the time message after the newline, every text
    token tokenized as the official code does (no BPE merge across the placeholder)."""
    model, engine = pair
    memory = model.encode_video(videos["short"])
    ids = model.prompt_ids(memory, QUESTION).tolist()
    request = {"prompt": chat_prompt(QUESTION, None), "multi_modal_data": {"video": str(videos["short"])}}
    output = engine.generate([request], greedy(max_tokens=1, logprobs=None))[0]
    at = ids.index(hico.model.IMAGE_TOKEN_INDEX)
    visual = memory.tokens.shape[0]
    got = list(output.prompt_token_ids)
    assert got[:at] == ids[:at] and got[at + visual:] == ids[at + 1:]
    assert len(set(got[at:at + visual])) == 1 and got[at] not in ids
    assert visual == 16 * memory.num_frames + 16 * (-memory.num_frames % 4)
    assert "The video lasts for 9.00 seconds" in model.tokenizer.decode(got[at + visual:])


def test_chat_messages_with_a_video_url_and_a_history(pair, videos) -> None:
    model, engine = pair
    first = hico_answer(model, videos["picture"], QUESTION)
    follow_up = "What colour is it?"
    reference = hico_answer(model, videos["picture"], follow_up, history=((QUESTION, first.text),))
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{videos['picture']}"}},
                                             {"type": "text", "text": QUESTION}]},
                {"role": "assistant", "content": first.text},
                {"role": "user", "content": follow_up}]
    output = engine.chat(messages, greedy())[0]
    assert_same(model, output, reference)


def test_sampling_options_come_from_mm_processor_kwargs(pair, videos) -> None:
    model, engine = pair
    reference = hico_answer(model, videos["picture"], QUESTION, sampling=SamplingOptions.plain(max_frames=16))
    request = {"prompt": chat_prompt(QUESTION, None), "multi_modal_data": {"video": str(videos["picture"])},
               "mm_processor_kwargs": {"max_num_frames": 16}}
    output = engine.generate([request], greedy())[0]
    assert_same(model, output, reference)
    assert reference.prompt_tokens < hico_answer(model, videos["picture"], QUESTION, 1).prompt_tokens


def test_a_batch_of_requests_matches_one_by_one(pair, videos) -> None:
    model, engine = pair
    questions = [QUESTION, "Is there a shape?", "What happens at the end?", "Name the colour."]
    requests = [{"prompt": chat_prompt(q, None), "multi_modal_data": {"video": str(videos[v])}}
                for q in questions for v in ("picture", "short")]
    outputs = engine.generate(requests, greedy(max_tokens=12, logprobs=None))
    for request, output in zip(requests, outputs):
        question = questions[requests.index(request) // 2]
        reference = hico_answer(model, Path(request["multi_modal_data"]["video"]), question, 12)
        assert without_stop(output.outputs[0].token_ids, model.stop_ids()) == reference.token_ids


def test_an_image_is_one_clip(pair, videos) -> None:
    model, engine = pair
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    memory = model.store.get_images([image]).memory
    reference = hico_answer(model, memory, "What is in the image?")
    output = engine.generate([{"prompt": chat_prompt("What is in the image?", None),
                               "multi_modal_data": {"image": image}}], greedy())[0]
    assert_same(model, output, reference)


def test_a_missing_video_is_named(pair) -> None:
    _, engine = pair
    with pytest.raises(Exception, match="no-such-video.mp4"):
        engine.generate([{"prompt": chat_prompt(QUESTION, None),
                          "multi_modal_data": {"video": "/tmp/no-such-video.mp4"}}], greedy())
