"""The chat-completions request parser: conversations, options and every refusal naming its field."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from hico.compress import DropSchedule
from hico.serve.errors import ApiError
from hico.serve.protocol import MediaRef, parse_chat
from hico.video.sampling import SamplingOptions

VIDEO = {"type": "video_url", "video_url": {"url": "hico://files/file-" + "a" * 24}}


def parse(**body):
    return parse_chat({"model": "m", **body}, max_tokens_limit=100, default_max_tokens=20)


def refused(**body) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(**body)
    assert caught.value.status == 400
    return caught.value


def test_multi_turn_conversation_becomes_history_and_question():
    request = parse(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [VIDEO, {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": "a red circle"},
        {"role": "user", "content": "Which colour?"},
        {"role": "user", "content": [{"type": "text", "text": "Answer in one word."}]},
    ])
    assert request.history == (("What is shown?", "a red circle"),)
    assert request.question == "Which colour?\nAnswer in one word."
    assert request.media == (MediaRef("video", VIDEO["video_url"]["url"]),)
    assert request.options.max_new_tokens == 20 and request.options.greedy
    assert request.sampling is None and request.dropout is None and not request.stream


def test_options_map_onto_hico_types():
    request = parse(messages=[{"role": "user", "content": [VIDEO, {"type": "text", "text": "?"}]}],
                    max_completion_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop="\n", stream=True,
                    stream_options={"include_usage": True},
                    hico={"num_frames": 16, "start": 2.5, "end": 30, "dropout": {"type": "uniform", "layers": [2],
                                                                              "ratios": [1, 0.5]}})
    assert (request.options.max_new_tokens, request.options.temperature, request.options.top_p) == (7, 0.5, 0.9)
    assert request.options.do_sample and request.options.seed == 3
    assert request.stop == ("\n",) and request.stream and request.include_usage
    assert request.sampling == SamplingOptions.plain(num_frames=16, start=2.5, end=30)
    assert request.dropout == DropSchedule("uniform", (2,), (1.0, 0.5))
    assert request.options.stop == ("\n",)  # the engine ends the answer at the stop strings


@pytest.mark.parametrize(("dropout", "expected"), [
    ("off", DropSchedule()),
    ("default", "default"),  # the checkpoint's inference setting, as when none is given
    ("model", "model"),  # the checkpoint's configured schedule, resolved by the server against the model
    ({"type": "uniform0_attention", "layers": [1, 2], "ratios": [1, 0.5, 0.25]},
     DropSchedule("uniform0_attention", (1, 2), (1.0, 0.5, 0.25))),
    ({"type": "attention", "layers": "2", "ratios": "1,0.5"}, DropSchedule("attention", (2,), (1.0, 0.5))),
    ({"type": "off"}, DropSchedule()),
    (False, DropSchedule()),
])
def test_dropout_is_read_as_the_command_line_reads_it(dropout, expected):
    assert parse(messages=request_messages(), hico={"dropout": dropout}).dropout == expected


def request_messages():
    return [{"role": "user", "content": [VIDEO, {"type": "text", "text": "?"}]}]


def test_images_and_a_video_do_not_mix():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    two = parse(messages=[{"role": "user", "content": [image, image, {"type": "text", "text": "?"}]}])
    assert [m.kind for m in two.media] == ["image", "image"]
    assert refused(messages=[{"role": "user", "content": [VIDEO, image, {"type": "text", "text": "?"}]}]).param \
        == "messages"


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": [VIDEO, "?"]}]}, None),
    ({"messages": [{"role": "user", "content": [VIDEO, {"type": "text", "text": "?"}]},
                   {"role": "assistant", "content": "a"}]}, "messages"),
    ({"messages": [{"role": "assistant", "content": [VIDEO]}]}, "messages[0].content[0]"),
    ({"messages": request_messages(), "max_tokens": 101}, "max_tokens"),
    ({"messages": request_messages(), "max_tokens": True}, "max_tokens"),
    ({"messages": request_messages(), "max_tokens": 1.5}, "max_tokens"),
    ({"messages": request_messages(), "top_p": 0}, "top_p"),
    ({"messages": request_messages(), "temperature": float("nan")}, "temperature"),
    ({"messages": request_messages(), "stop": [""]}, "stop"),
    ({"messages": request_messages(), "tools": [{"type": "function"}]}, "tools"),
    ({"messages": request_messages(), "hico": {"fps": -1}}, "hico.fps"),
    ({"messages": request_messages(), "hico": {"num_frames": 8, "fps": 1}}, "hico"),
    ({"messages": request_messages(), "hico": {"dropout": {"type": "uniform", "layers": [2]}}}, "hico.dropout"),
    ({"messages": request_messages(), "hico": {"dropout": {"type": "all"}}}, "hico.dropout"),
    ({"messages": request_messages(), "hico": {"dropout": "sometimes"}}, "hico.dropout"),
    ({"messages": request_messages(), "hico": {"dropout": 0.5}}, "hico.dropout"),
    ({"messages": request_messages(), "hico": {"dropout": {"type": "uniform", "layers": [2], "ratios": [1, 0.5],
                                                           "when": "always"}}}, "hico.dropout"),
    ({"messages": request_messages(), "hico": {"dropout": {"type": "uniform", "layers": [1.5],
                                                           "ratios": [1, 0.5]}}}, "hico.dropout"),
    ({"messages": request_messages(), "hico": {"dropout": {"type": "off", "layers": [2]}}}, "hico.dropout"),
    ({"messages": request_messages(), "model": 3}, "model"),
])
def test_refusals_name_the_field(body, param):
    error = refused(**body)
    assert error.body()["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert error.param == param, error.message


def test_a_too_long_conversation_is_refused():
    assert refused(messages=[{"role": "user", "content": [VIDEO, {"type": "text", "text": "x" * 40_000}]}]).code \
        == "context_length_exceeded"
