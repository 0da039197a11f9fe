"""Token ids and labels for one training sample, in the official templates; labels only on answers.

`qwen_2` (stages 2-4): the ChatML prompt that inference builds (`hico.prompt`), every assistant turn's text
and its `<|im_end|>` labelled, everything else IGNORE_INDEX. `plain` (stage 1, projector alignment): the
placeholder, then the first answer and a newline, labelled; the question is not used, as in the official
`plain` template. A sample whose ids plus visual tokens exceed `max_length` is not cut (its question or answer
would disappear): `encode_sample` returns None and the caller counts it as skipped.
"""

from __future__ import annotations

import torch

from hico.model import IMAGE_TOKEN_INDEX
from hico.prompt import IM_END, IM_START, IMAGE, SYSTEM, tokenize
from hico.train.data import Sample

IGNORE_INDEX = -100
TEMPLATES = ("qwen_2", "plain")


def encode_sample(sample: Sample, tokenizer, template: str = "qwen_2", time_msg: str | None = None,
                  visual_tokens: int = 0, max_length: int = 32768) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(input_ids, labels) with IMAGE_TOKEN_INDEX at the placeholder, or None when the sample is too long."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}: use qwen_2 or plain")
    pieces = _plain(sample) if template == "plain" else _chatml(sample, time_msg)
    ids, labels = [], []
    for text, learn in pieces:
        chunk = tokenize(text, tokenizer).tolist()
        ids += chunk
        labels += chunk if learn else [IGNORE_INDEX] * len(chunk)
    has_image = IMAGE_TOKEN_INDEX in ids
    if len(ids) - has_image + (visual_tokens if has_image else 0) > max_length:
        return None
    return torch.tensor(ids), torch.tensor(labels)


def _chatml(sample: Sample, time_msg: str | None) -> list[tuple[str, bool]]:
    pieces = [(f"{IM_START}system\n{SYSTEM}{IM_END}\n", False)]
    for role, text in sample.turns:
        if role == "user":
            pieces.append((f"{IM_START}user\n{_with_time(text, time_msg)}{IM_END}\n{IM_START}assistant\n", False))
        else:
            pieces += [(f"{text}{IM_END}", True), ("\n", False)]
    return pieces


def _with_time(text: str, time_msg: str | None) -> str:
    """The time message goes right after the placeholder line, where inference puts it."""
    if IMAGE not in text or not time_msg:
        return text
    head, tail = text.split(IMAGE, 1)
    return f"{head}{IMAGE}\n{time_msg.strip()} {tail.removeprefix(chr(10))}"


def _plain(sample: Sample) -> list[tuple[str, bool]]:
    answer = next(text for role, text in sample.turns if role == "assistant")
    return [(IMAGE if sample.video or sample.image else "", False), (f"{answer}\n", True)]
