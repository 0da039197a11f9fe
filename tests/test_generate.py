"""The decoding loop: greedy, top-p by hand, stop tokens, limits, streaming."""

from __future__ import annotations

import pytest
import torch

from hico.errors import OptionError
from hico.generate import GenerationOptions, generate, pick


def _scripted(sequence: list[int], vocab: int = 10):
    """A fake model whose next-token argmax follows `sequence`."""
    def logits_for(token: int) -> torch.Tensor:
        out = torch.zeros(vocab)
        out[token] = 5.0
        return out
    state = {"i": 0}

    def step(_token: int) -> torch.Tensor:
        state["i"] += 1
        return logits_for(sequence[state["i"]])
    return step, logits_for(sequence[0])


def test_greedy_stops_before_the_stop_token_and_streams() -> None:
    step, first = _scripted([4, 5, 6, 2, 7])
    seen = []
    assert generate(step, first, GenerationOptions(), stop_ids={2}, on_token=seen.append) == [4, 5, 6]
    assert seen == [4, 5, 6]


def test_max_new_tokens() -> None:
    step, first = _scripted([4, 5, 6, 7, 8])
    assert generate(step, first, GenerationOptions(max_new_tokens=2)) == [4, 5]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1} only
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    options = GenerationOptions(do_sample=True, temperature=1.0, top_p=0.7)
    generator = torch.Generator().manual_seed(0)
    draws = {pick(logits, options, generator) for _ in range(300)}
    assert draws == {0, 1}


def test_sampling_is_reproducible_with_a_seed() -> None:
    logits = torch.randn(50)
    options = GenerationOptions(do_sample=True, temperature=2.0, seed=7, max_new_tokens=5)
    runs = [generate(lambda t: logits, logits, options) for _ in range(2)]
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


def test_temperature_zero_is_greedy() -> None:
    logits = torch.tensor([0.1, 3.0, 0.2])
    assert pick(logits, GenerationOptions(do_sample=True, temperature=0.0)) == 1


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0), dict(top_p=1.5)])
def test_bad_options(kwargs) -> None:
    with pytest.raises(OptionError):
        GenerationOptions(**kwargs)
