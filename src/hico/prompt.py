"""Prompts as the official chat builds them: ChatML, one `<image>` placeholder, the time message, history.

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<image>\\n{time message} {question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n   (earlier turns)
    <|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hico.clips import IMAGE_TOKEN_INDEX

SYSTEM = "You are a helpful assistant."
IMAGE = "<image>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def user_turn(question: str, time_msg: str | None, first: bool) -> str:
    """The user text of one turn; the first carries the placeholder and the time message."""
    if not first:
        return question
    timing = f"{time_msg.strip()} " if time_msg else ""
    return f"{IMAGE}\n{timing}{question}"


def chat_prompt(question: str, time_msg: str | None, history: Sequence[tuple[str, str]] = ()) -> str:
    """The full prompt text, ending with the assistant header the model continues from."""
    text = f"{IM_START}system\n{SYSTEM}{IM_END}\n"
    for turn, (asked, answered) in enumerate(history):
        text += f"{IM_START}user\n{user_turn(asked, time_msg, turn == 0)}{IM_END}\n"
        text += f"{IM_START}assistant\n{answered}{IM_END}\n"
    text += f"{IM_START}user\n{user_turn(question, time_msg, not history)}{IM_END}\n"
    return text + f"{IM_START}assistant\n"


def niah_prompt(question: str) -> str:
    """The official NIAH evaluation prompt: no time message and no newline after the visual tokens."""
    return f"{IM_START}system\n{SYSTEM}{IM_END}\n{IM_START}user\n{IMAGE}{question}{IM_END}\n{IM_START}assistant\n"


def tokenize(text: str, tokenizer) -> torch.Tensor:
    """Token ids with IMAGE_TOKEN_INDEX where `<image>` stands; chunks are tokenized separately, no BOS."""
    ids: list[int] = []
    for i, chunk in enumerate(text.split(IMAGE)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        if chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)
