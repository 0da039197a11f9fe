"""The chat-completions wire format: a request body -> ChatRequest (every field checked, each mistake a 400
naming the field), and the response, chunk and usage objects OpenAI clients parse.

A conversation is OpenAI `messages`: the video (`video_url`) or images (`image_url`) ride in user messages,
earlier user/assistant pairs become the history, the last user message is the question. hico's own options
ride under `hico`: sampling (`num_frames`, `fps`, `max_frames`, `start`, `end`), `dropout` (what `--dropout`
takes: "default", "off", "model" or a type, or {"type": ..., "layers": [...], "ratios": [...]}; not given: the
checkpoint's inference setting) and `timeout` (seconds, at most the server's --request-timeout).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

from hico.dropout import DropSchedule
from hico.errors import OptionError
from hico.generate import GenerationConfig
from hico.serve.errors import bad_request
from hico.video.sampling import SamplingOptions

MAX_IMAGES = 8
MAX_STOPS = 4
MAX_TEXT_CHARS = 32_000  # per conversation: the toy model's context is short, a real one's is not endless
ROLES = ("system", "developer", "user", "assistant")
SAMPLING_KEYS = ("num_frames", "fps", "max_frames", "start", "end")


@dataclass(frozen=True)
class MediaRef:
    kind: str  # "video" or "image"
    url: str


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    question: str
    history: tuple[tuple[str, str], ...]  # earlier (question, answer) turns
    media: tuple[MediaRef, ...]
    options: GenerationConfig  # with the request's stop strings
    sampling: SamplingOptions | None  # None: the server's default
    dropout: DropSchedule | str | None  # as `DropSchedule.parse` reads it; None: the checkpoint's setting
    stream: bool = False
    include_usage: bool = False
    timeout: float | None = None  # seconds; None: the server's
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def stop(self) -> tuple[str, ...]:
        return self.options.stop


def _number(body: dict, key: str, low: float, high: float, integer: bool = False, default=None, prefix: str = ""):
    value, name = body.get(key, default), prefix + key
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise bad_request(f"{name} must be {kind}, got {type(value).__name__}", "invalid_type", name)
    if not (math.isfinite(value) and low <= value <= high):
        raise bad_request(f"{name} must be between {low:g} and {high:g}, got {value}", "invalid_value", name)
    return value


def _text(content, where: str, allow_media: bool, media: list[MediaRef]) -> str:
    """The text of a message's content (a string or a list of parts); media parts go into `media`."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of parts", "invalid_type", where)
    texts = []
    for i, part in enumerate(content):
        spot = f"{where}.content[{i}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(f"{spot} must be an object with a type", "invalid_type", spot)
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{spot}.text must be a string", "invalid_type", spot)
            texts.append(part["text"])
        elif kind in ("video_url", "image_url"):
            if not allow_media:
                raise bad_request(f"{spot}: only user messages may carry a video or image", "invalid_value", spot)
            ref = part.get(kind)
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str) or not url:
                raise bad_request(f"{spot}.{kind}.url must be a non-empty string", "invalid_type", spot)
            media.append(MediaRef(kind.removesuffix("_url"), url))
        else:
            raise bad_request(f"{spot}: unknown content part type {kind[:40]!r} (text, video_url, image_url)",
                              "invalid_value", spot)
    return "\n".join(texts)


def _conversation(messages) -> tuple[str, tuple[tuple[str, str], ...], tuple[MediaRef, ...]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "invalid_value", "messages")
    media: list[MediaRef] = []
    history: list[tuple[str, str]] = []
    asked: list[str] = []
    chars = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", "invalid_type", where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}", "invalid_value", where)
        if "content" not in message:
            raise bad_request(f"{where} has no content", "invalid_value", where)
        text = _text(message["content"], where, role == "user", media)
        chars += len(text)
        if role in ("system", "developer"):
            continue  # the checkpoint's own system prompt is kept: the model was trained with it
        if role == "user":
            asked.append(text)
        elif not asked:
            raise bad_request(f"{where}: an assistant message must follow a user message", "invalid_value", where)
        else:
            history.append(("\n".join(asked).strip(), text.strip()))
            asked = []
    if chars > MAX_TEXT_CHARS:
        raise bad_request(f"the conversation holds {chars} characters of text, more than {MAX_TEXT_CHARS}",
                          "context_length_exceeded", "messages")
    question = "\n".join(asked).strip()
    if not question:
        raise bad_request("the last message must be a user message with a question", "invalid_value", "messages")
    videos = sum(ref.kind == "video" for ref in media)
    if not media:
        raise bad_request("no video or image in the conversation: add a video_url (or image_url) content part "
                          "to a user message", "missing_media", "messages")
    if videos > 1 or (videos and len(media) > 1):
        raise bad_request("one video per conversation, or images without a video", "invalid_value", "messages")
    if len(media) > MAX_IMAGES:
        raise bad_request(f"at most {MAX_IMAGES} images per conversation", "invalid_value", "messages")
    return question, tuple(history), tuple(media)


def _sampling(hico: dict) -> tuple[SamplingOptions | None, DropSchedule | str | None]:
    unknown = set(hico) - set(SAMPLING_KEYS) - {"dropout", "timeout"}
    if unknown:
        raise bad_request(f"unknown hico option(s) {', '.join(sorted(unknown))[:200]}; known: "
                          f"{', '.join(SAMPLING_KEYS)}, dropout, timeout", "invalid_value", "hico")
    sampling = None
    if any(hico.get(key) is not None for key in SAMPLING_KEYS):
        values = {key: _number(hico, key, 0, 1e6, integer=key in ("num_frames", "max_frames"), prefix="hico.")
                  for key in SAMPLING_KEYS}
        try:
            sampling = SamplingOptions.plain(**values)
        except OptionError as exc:
            raise bad_request(f"hico sampling: {exc}", "invalid_value", "hico") from None
    dropout = hico.get("dropout")
    if dropout is None:
        return sampling, None  # not given: the checkpoint's inference setting
    try:
        return sampling, DropSchedule.parse(dropout)
    except OptionError as exc:
        raise bad_request(f"hico dropout: {exc}", "invalid_value", "hico.dropout") from None


def parse_chat(body, max_tokens_limit: int, default_max_tokens: int) -> ChatRequest:
    """A checked ChatRequest from a decoded JSON body; a 400 ApiError names the first bad field."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", "invalid_json")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model must be a string", "invalid_type", "model")
    question, history, media = _conversation(body.get("messages"))
    for name in ("tools", "functions", "tool_choice"):
        if body.get(name):
            raise bad_request(f"{name} is not supported by this server", "unsupported_parameter", name)
    if body.get("logprobs"):
        raise bad_request("logprobs are not supported by this server", "unsupported_parameter", "logprobs")
    if _number(body, "n", 1, 1, integer=True, default=1) != 1:
        raise bad_request("n must be 1", "invalid_value", "n")
    limit_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    options = generation_config(body, max_tokens_limit, default_max_tokens, limit_name)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream must be true or false", "invalid_type", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or not isinstance(stream_options.get("include_usage", False), bool):
        raise bad_request("stream_options must be an object like {\"include_usage\": true}", "invalid_type",
                          "stream_options")
    hico = body.get("hico") or {}
    if not isinstance(hico, dict):
        raise bad_request("hico must be an object of hico options", "invalid_type", "hico")
    sampling, dropout = _sampling(hico)
    timeout = _number(hico, "timeout", 0, math.inf, prefix="hico.")
    if timeout is not None and timeout <= 0:
        raise bad_request("hico.timeout must be a positive number of seconds", "invalid_value", "hico.timeout")
    return ChatRequest(model=model, question=question, history=history, media=media, options=options,
                       sampling=sampling, dropout=dropout, stream=stream,
                       include_usage=stream_options.get("include_usage", False), timeout=timeout)


def generation_config(body: dict, max_tokens_limit: int, default_max_tokens: int,
                      limit_name: str = "max_tokens") -> GenerationConfig:
    """The sampling fields of a request (max tokens, temperature, top_p, seed, stop); a 400 names a bad one."""
    max_tokens = _number(body, limit_name, 1, max_tokens_limit, integer=True, default=default_max_tokens)
    temperature = _number(body, "temperature", 0, 2, default=1.0)
    top_p = _number(body, "top_p", 0, 1, default=1.0)
    if top_p == 0:
        raise bad_request("top_p must be above 0", "invalid_value", "top_p")
    seed = _number(body, "seed", -(2 ** 63), 2 ** 63 - 1, integer=True)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or \
            not all(isinstance(s, str) and 0 < len(s) <= 100 for s in stops):
        raise bad_request(f"stop must be a string or a list of up to {MAX_STOPS} non-empty strings",
                          "invalid_value", "stop")
    # OpenAI's default temperature is 1 (sampling); the model card's is greedy: a client that says nothing
    # gets the model card's behaviour, one that names a temperature above 0 gets sampling
    sampled = body.get("temperature") is not None and temperature > 0
    return GenerationConfig(max_new_tokens=max_tokens, do_sample=sampled, temperature=temperature, top_p=top_p,
                            seed=seed, stop=tuple(stops))


def usage(prompt_tokens: int, completion_tokens: int, visual_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"visual_tokens": visual_tokens}}


def completion(request: ChatRequest, model: str, text: str, finish: str, counts: dict, plan: dict) -> dict:
    return {"id": request.id, "object": "chat.completion", "created": request.created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage(**counts), "hico": plan}


def chunk(request: ChatRequest, model: str, delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": request.id, "object": "chat.completion.chunk", "created": request.created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
