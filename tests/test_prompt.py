"""Prompt text and tokenization, against hand-written ChatML."""

from __future__ import annotations

from hico.model import IMAGE_TOKEN_INDEX
from hico.prompt import chat_prompt, tokenize

TIME = "\nThe video lasts for 12.00 seconds, and 8 frames are uniformly sampled from it. "


def test_first_turn_matches_the_official_chat() -> None:
    assert chat_prompt("What happens?", TIME) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nThe video lasts for 12.00 seconds, and 8 frames are uniformly sampled from it. "
        "What happens?<|im_end|>\n<|im_start|>assistant\n")


def test_history_keeps_the_image_in_the_first_turn_only() -> None:
    text = chat_prompt("And then?", TIME, history=[("What happens?", "A dog runs.")])
    assert text.count("<image>") == 1
    assert text.endswith("<|im_start|>assistant\nA dog runs.<|im_end|>\n"
                         "<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n")


class CharTokenizer:
    """One id per character: shows exactly how chunks are joined."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        assert not add_special_tokens
        return {"input_ids": [ord(c) for c in text]}


def test_tokenize_splices_one_placeholder() -> None:
    ids = tokenize("ab<image>\nc", CharTokenizer()).tolist()
    assert ids == [ord("a"), ord("b"), IMAGE_TOKEN_INDEX, ord("\n"), ord("c")]
