"""The decoding loop: greedy or sampled (temperature, top-p), stop tokens, a per-token streaming callback."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

from hico.errors import OptionError


@dataclass(frozen=True)
class GenerationOptions:
    """Defaults follow the official model card: greedy, up to 1024 new tokens."""

    max_new_tokens: int = 1024
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise OptionError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise OptionError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise OptionError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


def pick(logits: torch.Tensor, options: GenerationOptions, generator: torch.Generator | None = None) -> int:
    """One token id from (vocab,) logits."""
    if options.greedy:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / options.temperature, dim=-1)
    if options.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs >= options.top_p  # keep the smallest set reaching top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(step: Callable[[int], torch.Tensor], first_logits: torch.Tensor, options: GenerationOptions,
             stop_ids: Collection[int] = (), on_token: Callable[[int], None] | None = None) -> list[int]:
    """New token ids, without the stop token. `step(token)` feeds one token and returns the next (vocab,) logits."""
    generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
    logits, tokens = first_logits, []
    for _ in range(options.max_new_tokens):
        token = pick(logits.cpu(), options, generator)
        if token in stop_ids:
            break
        tokens.append(token)
        if on_token is not None:
            on_token(token)
        if len(tokens) == options.max_new_tokens:
            break
        logits = step(token)
    return tokens
