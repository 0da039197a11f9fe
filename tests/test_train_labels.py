"""Labels: the official qwen_2 rule (checked against the official preprocessing's output on a Qwen2-style
tokenizer) and answers only; the training prompt equal to the inference prompt; long samples skipped."""

from __future__ import annotations

import re

import pytest
import torch

from hico.model import IMAGE_TOKEN_INDEX
from hico.prompt import chat_prompt, tokenize
from hico.synthetic.checkpoints import train_tokenizer
from hico.train.data import Sample
from hico.train.labels import IGNORE_INDEX, encode_sample
from hico.train.stages import load_stage

TIME = "\nThe video lasts for 12.00 seconds, and 8 frames are uniformly sampled from it. "
SAMPLE = Sample(turns=(("user", "<image>\nWhat colour is the square?"), ("assistant", "A red square."),
                       ("user", "Which shape appears first?"), ("assistant", "The circle.")), video="/v.mp4")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    train_tokenizer(folder)
    return AutoTokenizer.from_pretrained(str(folder))


def test_answers_setting_labels_only_answers(tokenizer) -> None:
    ids, labels = encode_sample(SAMPLE, tokenizer, time_msg=TIME, labels="answers")
    assert (ids == IMAGE_TOKEN_INDEX).sum() == 1 and ids.shape == labels.shape
    learned = labels[labels != IGNORE_INDEX].tolist()
    assert tokenizer.decode(learned) == "A red square.<|im_end|>The circle.<|im_end|>"
    assert torch.equal(ids[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])


def test_training_prompt_is_the_inference_prompt(tokenizer) -> None:
    ids, labels = encode_sample(SAMPLE, tokenizer, time_msg=TIME, labels="answers")
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


# Qwen2's pre-tokenizer split pattern (its tokenizer.json), then byte-level pieces: the pieces, and so the
# places of "\n" (198) and of the ChatML tokens, are those Qwen2's tokenizer produces.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def qwen2_style_tokenizer(texts: list[str], special_ids: tuple[int, int, int]):
    """A word-level tokenizer over Qwen2's pieces: "\n" is 198 as in Qwen2, the ChatML tokens have
    `special_ids`, other pieces 10, 11, ... in order of first appearance in `texts` (no download)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    vocab = dict(zip(SPECIALS, special_ids)) | {"\u010a": 198, "<unk>": 3}  # byte-level "\n" is "Ċ"
    for text in texts:
        for chunk in re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text):
            for piece, _ in ([] if chunk in SPECIALS else split.pre_tokenize_str(chunk)):
                vocab.setdefault(piece, 10 + sum(10 <= v < 198 for v in vocab.values()))
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer, model.decoder = split, decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", pad_token=SPECIALS[0],
                                   eos_token=SPECIALS[2], additional_special_tokens=list(SPECIALS[1:]))


# The worked example of shared/conformance/pending/umt224-tiny-train/notes.md: the official preprocess_qwen
# ids and labels of a one-question conversation (time message already in the user text, as
# preprocess_multimodal leaves it), with <|endoftext|>, <|im_start|>, <|im_end|> = 0, 1, 2.
OFFICIAL_USER = ("<image>\nThe video lasts for 8.00 seconds, and 8 frames are uniformly sampled from it. "
                 "\nWhat animal appears in the video?")
OFFICIAL_ANSWER = "A cat sits next to a cup of coffee."
OFFICIAL_IDS = [1, 10, 198, 11, 12, 13, 14, 15, 16, 2, 198, 1, 17, 198, -200, 198, 18, 19, 20, 21, 22, 23, 16, 24,
                24, 25, 26, 27, 22, 23, 28, 12, 29, 30, 31, 32, 16, 33, 34, 35, 36, 37, 38, 19, 39, 2, 198, 1, 40,
                198, 41, 42, 43, 44, 45, 13, 46, 47, 48, 16, 2, 198]
OFFICIAL_LABELS = [1, -100, 198] + [-100] * 6 + [2, 198, 1, -100, 198, -100, 198] + [-100] * 29 + OFFICIAL_IDS[45:]


def test_official_labels_equal_the_official_preprocessing() -> None:
    text = f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{OFFICIAL_USER}<|im_end|>\n"
    text += f"<|im_start|>assistant\n{OFFICIAL_ANSWER}<|im_end|>\n"
    tokenizer = qwen2_style_tokenizer(text.split("<image>"), (0, 1, 2))
    sample = Sample(turns=(("user", OFFICIAL_USER), ("assistant", OFFICIAL_ANSWER)), video="/v.mp4")
    ids, labels = encode_sample(sample, tokenizer)
    assert ids.tolist() == OFFICIAL_IDS
    assert labels.tolist() == OFFICIAL_LABELS


def test_official_rule_with_qwen2_ids_on_a_two_round_conversation() -> None:
    """With Qwen2's own ids (newline 198, <|im_start|> 151644, <|im_end|> 151645): assistant turns are
    labelled whole, and the three structural tokens everywhere; read off turn by turn from the ids."""
    (_, first), (_, reply), (_, second), (_, last) = SAMPLE.turns
    text = chat_prompt(second, TIME, [(first.removeprefix("<image>\n"), reply)]) + f"{last}<|im_end|>\n"
    tokenizer = qwen2_style_tokenizer(text.split("<image>"), (151643, 151644, 151645))
    ids, labels = encode_sample(SAMPLE, tokenizer, time_msg=TIME)
    ids, labels = ids.tolist(), labels.tolist()
    starts = [i for i, token in enumerate(ids) if token == 151644] + [len(ids)]
    assert len(starts) == 6 and ids[-2:] == [151645, 198]  # system, 2 x (user, assistant), closing newline
    structural = {198, 151644, 151645}
    for begin, end in zip(starts, starts[1:]):
        role = tokenizer.decode([ids[begin + 1]])
        for i in range(begin, end):
            expected = ids[i] if role == "assistant" or ids[i] in structural else IGNORE_INDEX
            assert labels[i] == expected, (role, i)
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX and t not in structural]) == \
        "assistantA red square.assistantThe circle."


def test_labels_setting_is_validated() -> None:
    from hico.errors import OptionError

    assert load_stage(3).labels == "official" and load_stage(3, {"labels": "answers"}).labels == "answers"
    with pytest.raises(OptionError, match="labels must be official or answers"):
        load_stage(3, {"labels": "everything"})
