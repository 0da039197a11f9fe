"""Labels only on answers, the training prompt equal to the inference prompt, long samples skipped."""

from __future__ import annotations

import pytest
import torch

from hico.model import IMAGE_TOKEN_INDEX
from hico.prompt import chat_prompt, tokenize
from hico.synthetic.checkpoints import train_tokenizer
from hico.train.data import Sample
from hico.train.labels import IGNORE_INDEX, encode_sample

TIME = "\nThe video lasts for 12.00 seconds, and 8 frames are uniformly sampled from it. "
SAMPLE = Sample(turns=(("user", "<image>\nWhat colour is the square?"), ("assistant", "A red square."),
                       ("user", "Which shape appears first?"), ("assistant", "The circle.")), video="/v.mp4")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    train_tokenizer(folder)
    return AutoTokenizer.from_pretrained(str(folder))


def test_only_answers_are_labelled(tokenizer) -> None:
    ids, labels = encode_sample(SAMPLE, tokenizer, time_msg=TIME)
    assert (ids == IMAGE_TOKEN_INDEX).sum() == 1 and ids.shape == labels.shape
    learned = labels[labels != IGNORE_INDEX].tolist()
    assert tokenizer.decode(learned) == "A red square.<|im_end|>The circle.<|im_end|>"
    assert torch.equal(ids[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])


def test_training_prompt_is_the_inference_prompt(tokenizer) -> None:
    ids, labels = encode_sample(SAMPLE, tokenizer, time_msg=TIME)
    first = tokenize(chat_prompt("What colour is the square?", TIME), tokenizer)
    assert torch.equal(ids[: len(first)], first) and (labels[: len(first)] == IGNORE_INDEX).all()
    history = [("What colour is the square?", "A red square.")]
    second = tokenize(chat_prompt("Which shape appears first?", TIME, history), tokenizer)
    assert torch.equal(ids[: len(second)], second)


def test_plain_template_learns_the_caption_only(tokenizer) -> None:
    ids, labels = encode_sample(SAMPLE, tokenizer, template="plain")
    assert ids[0] == IMAGE_TOKEN_INDEX and labels[0] == IGNORE_INDEX
    assert tokenizer.decode(labels[1:].tolist()) == "A red square.\n"


def test_too_long_samples_are_skipped_not_cut(tokenizer) -> None:
    ids, _ = encode_sample(SAMPLE, tokenizer, time_msg=TIME)
    text_only = len(ids) - 1
    assert encode_sample(SAMPLE, tokenizer, time_msg=TIME, visual_tokens=64, max_length=text_only + 64) is not None
    assert encode_sample(SAMPLE, tokenizer, time_msg=TIME, visual_tokens=64, max_length=text_only + 63) is None
