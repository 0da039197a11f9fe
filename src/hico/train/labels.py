"""Token ids and labels for one training sample, in the official templates.

`qwen_2` (stages 2-4): the ChatML prompt that inference builds (`hico.prompt`). Labels follow the official
`preprocess_qwen` rule by default (`labels="official"`): whole assistant turns are labelled, their
`<|im_start|>assistant\n` header and closing `<|im_end|>\n` included, and so is every newline, `<|im_start|>`
and `<|im_end|>` token anywhere, system and user turns too (the official code hard-codes Qwen2's newline id
198; hico takes the tokenizer's own id for "\n", which is 198 for Qwen2's tokenizers). `labels="answers"`
labels only each answer's text and its `<|im_end|>`. `plain` (stage 1, projector alignment): the
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
LABEL_RULES = ("official", "answers")  # qwen_2 only; plain always labels the caption


def encode_sample(sample: Sample, tokenizer, template: str = "qwen_2", time_msg: str | None = None,
                  visual_tokens: int = 0, max_length: int = 32768,
                  labels: str = "official") -> tuple[torch.Tensor, torch.Tensor] | None:
    """(input_ids, labels) with IMAGE_TOKEN_INDEX at the placeholder, or None when the sample is too long."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}: use qwen_2 or plain")
    if labels not in LABEL_RULES:
        raise ValueError(f"unknown labels rule {labels!r}: use official or answers")
    official = template == "qwen_2" and labels == "official"
    if template == "plain":
        pieces = _plain(sample)
    else:
        pieces = _chatml_turns(sample, time_msg) if official else _chatml(sample, time_msg)
    ids, targets = [], []
    for text, learn in pieces:
        chunk = tokenize(text, tokenizer).tolist()
        ids += chunk
        targets += chunk if learn else [IGNORE_INDEX] * len(chunk)
    if official:
        always = structural_ids(tokenizer)
        targets = [token if token in always else target for token, target in zip(ids, targets)]
    has_image = IMAGE_TOKEN_INDEX in ids
    if len(ids) - has_image + (visual_tokens if has_image else 0) > max_length:
        return None
    return torch.tensor(ids), torch.tensor(targets)


def structural_ids(tokenizer) -> set[int]:
    """The ids the official qwen_2 rule labels wherever they stand: newline, `<|im_start|>`, `<|im_end|>`."""
    found = {tokenizer.convert_tokens_to_ids(token) for token in (IM_START, IM_END)}
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if len(newline) == 1:
        found.add(newline[0])
    return {i for i in found if isinstance(i, int) and i != tokenizer.unk_token_id}


def _chatml_turns(sample: Sample, time_msg: str | None) -> list[tuple[str, bool]]:
    """One piece per ChatML turn, each with its header and closing `<|im_end|>\n`; assistant turns learned."""
    pieces = [(f"{IM_START}system\n{SYSTEM}{IM_END}\n", False)]
    for role, text in sample.turns:
        text = _with_time(text, time_msg) if role == "user" else text
        pieces.append((f"{IM_START}{role}\n{text}{IM_END}\n", role == "assistant"))
    return pieces


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
