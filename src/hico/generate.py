"""The decoding loop and what it returns: greedy or sampled (temperature, top-p), stop tokens and stop strings,
cancellation, streaming text, and the `Answer` with its token counts, finish reason and timings.

`generate` is the bare loop over a `step(token) -> logits` function; `run_decoding` is the engine's (used by
`Hico.generate`): it also turns tokens into text as they come (`TextStream`), ends at stop strings, stops when
`cancel` says so, and checks the logits for NaN/inf every `FINITE_CHECK_EVERY` tokens instead of hooking every
stage of every step (each check reads one flag back from the device).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import torch

from hico.errors import OptionError

FINISH_REASONS = ("stop", "length", "cancelled")
FINITE_CHECK_EVERY = 32  # tokens between reads of the device-side "all logits finite" flag


@dataclass(frozen=True)
class GenerationConfig:
    """Defaults follow the official model card: greedy, up to 1024 new tokens. `stop`: strings that end the
    answer (not included), as OpenAI's `stop` and lmms-eval's `until`."""

    max_new_tokens: int = 1024
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise OptionError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise OptionError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise OptionError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise OptionError(f"stop is a list of strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


GenerationOptions = GenerationConfig  # the name before stop strings joined it


@dataclass(frozen=True)
class Timings:
    prefill_s: float  # the prompt through the LLM (what the kept video prefix saves is not in it)
    decode_s: float  # every new token after the first
    first_token_s: float  # from the call to the first token picked

    def ms_per_token(self, tokens: int) -> float:
        return 1000 * self.decode_s / max(tokens - 1, 1)


@dataclass(frozen=True)
class Answer:
    text: str  # stripped, cut before a stop string
    token_ids: tuple[int, ...]  # the tokens picked (after a stop string: all of them, the stop included)
    prompt_tokens: int  # text tokens plus every visual token the placeholder stands for
    completion_tokens: int
    finish_reason: str  # "stop" (stop token or string), "length" (max_new_tokens) or "cancelled"
    visual_tokens: int
    timings: Timings


def pick(logits: torch.Tensor, options: GenerationConfig, generator: torch.Generator | None = None) -> int:
    """One token id from (vocab,) logits."""
    if options.greedy:
        return int(logits.argmax())
    probs = torch.softmax(logits.float().cpu() / options.temperature, dim=-1)
    if options.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs >= options.top_p  # keep the smallest set reaching top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(step: Callable[[int], torch.Tensor], first_logits: torch.Tensor, options: GenerationConfig,
             stop_ids: Collection[int] = (), on_token: Callable[[int], None] | None = None) -> list[int]:
    """New token ids, without the stop token. `step(token)` feeds one token and returns the next (vocab,) logits."""
    generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
    logits, tokens = first_logits, []
    for _ in range(options.max_new_tokens):
        token = pick(logits, options, generator)
        if token in stop_ids:
            break
        tokens.append(token)
        if on_token is not None:
            on_token(token)
        if len(tokens) == options.max_new_tokens:
            break
        logits = step(token)
    return tokens


class TextStream:
    """Tokens in, the text they add out, as soon as it is whole: a piece that ends inside a multi-byte
    character waits for its next token, and text that may be the start of a stop string is held back until
    it is known not to be one. Decodes a short window of tokens per step (the tokens since the last emitted
    text), not the whole answer."""

    def __init__(self, tokenizer, stops: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.tokens: list[int] = []
        self.prefix_at = self.read_at = 0  # the window: tokens[prefix_at:read_at] is text already counted
        self.text = ""  # all the text decoded so far (cut at a stop string once one appears)
        self.sent = 0  # characters of `text` handed out
        self.stopped = False

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def add(self, token: int) -> str:
        """The text that is safe to show after `token`."""
        self.tokens.append(token)
        before = self._decode(self.tokens[self.prefix_at:self.read_at])
        after = self._decode(self.tokens[self.prefix_at:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.text += after[len(before):]
        self.prefix_at, self.read_at = self.read_at, len(self.tokens)
        hits = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True
            return self.flush()
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        end = len(self.text) - hold
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out

    def flush(self) -> str:
        """What was held back (the answer is over: it is not the start of a stop string)."""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


class Cancel:
    """Whether to stop: `cancel` may be None, a threading.Event (or anything with `is_set`), or a callable."""

    def __init__(self, cancel: object) -> None:
        if cancel is None:
            self.check = lambda: False
        elif hasattr(cancel, "is_set"):
            self.check = cancel.is_set
        elif callable(cancel):
            self.check = cancel
        else:
            raise TypeError(f"cancel is an Event or a callable, got {type(cancel).__name__}")


def run_decoding(step: Callable[[int], torch.Tensor], first_logits: torch.Tensor, config: GenerationConfig,
                 stop_ids: Collection[int], text: TextStream, cancel: object = None,
                 nonfinite: Callable[[], Exception] | None = None) -> Iterator[str]:
    """Pick tokens until a stop token, a stop string, `max_new_tokens` or `cancel`; yields the text each token
    makes visible (including ""), and returns the finish reason. `nonfinite()` makes the error raised when
    logits hold NaN or inf (checked on the device every FINITE_CHECK_EVERY tokens and at the end)."""
    generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
    stopping = Cancel(cancel).check
    finite = torch.ones((), dtype=torch.bool, device=first_logits.device)
    logits, picked, finish = first_logits, 0, "length"

    def check() -> None:
        if nonfinite is not None and not bool(finite):
            raise nonfinite()

    while picked < config.max_new_tokens:
        if stopping():
            finish = "cancelled"
            break
        finite &= torch.isfinite(logits).all()
        token = pick(logits, config, generator)
        picked += 1
        if token in stop_ids:
            finish = "stop"
            break
        yield text.add(token)
        if text.stopped:
            finish = "stop"
            break
        if picked % FINITE_CHECK_EVERY == 0:
            check()
        if picked < config.max_new_tokens:
            logits = step(token)
    check()
    if finish != "cancelled":
        yield text.flush()
    return finish


def timed(clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
    """Seconds since this call."""
    start = clock()
    return lambda: clock() - start
