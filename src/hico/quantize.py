"""Weight-only int8 quantization of the LLM's linear layers, with torchao (pinned in pyproject.toml).

torchao is PyTorch's own quantization library: its `Int8WeightOnlyConfig` stores each linear weight as int8
with one float scale per output row and runs on CPU and CUDA with the stock torch kernels, so nothing else
has to be built. The vision tower, the projector and the token embeddings stay in the model's dtype (they
are a small part of a 2B/7B model, and the tower's features feed the merge's similarity); the LM head is
quantized unless it shares its weight with the embeddings.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from hico.errors import OptionError

QUANTIZATIONS = ("int8",)
NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quantize_llm(model: nn.Module, method: str) -> int:
    """Quantize `model.llm`'s linear layers in place (`method`: "int8"); returns how many were quantized."""
    if method not in QUANTIZATIONS:
        raise OptionError(f"unknown quantization {method!r}; use one of {', '.join(QUANTIZATIONS)}")
    llm = model.llm
    tied = llm.lm_head.weight is llm.model.embed_tokens.weight
    chosen = {name for name, module in llm.named_modules()
              if isinstance(module, nn.Linear) and not (tied and name == "lm_head")}
    with _quiet():
        try:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError as exc:
            raise OptionError("int8 quantization needs torchao: pip install 'torchao==0.18.0'") from exc
        quantize_(llm, Int8WeightOnlyConfig(), filter_fn=lambda module, name: name in chosen)
    return len(chosen)


@contextmanager
def _quiet() -> Iterator[None]:
    """torchao logs warnings about its CUDA-only kernels and torch.compile on import and first use; they say
    nothing to a hico user. torch's logging ignores levels and `logging.disable`, so a filter drops them."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    quiet = logging.Filter("-")  # passes only records of a logger named "-": none of these
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
