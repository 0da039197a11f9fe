"""The embedded default model: a tiny HiCo model that hico trains itself on synthetic videos (`recipe.py`),
shipped inside the package (`weights/`) so `hico chat`, `hico niah run` and `make demo` work the moment hico is
installed. It reads the colour and shape of synthetic pictures and nothing else (docs/tiny-model.md).
"""

from __future__ import annotations

from pathlib import Path

from hico.errors import HicoError

WEIGHTS = Path(__file__).resolve().parent / "weights"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def embedded_path() -> Path:
    """The folder of the shipped model; an error says how to rebuild it when it is missing."""
    if not all((WEIGHTS / name).exists() for name in FILES):
        raise HicoError(f"the embedded model is missing from {WEIGHTS}; rebuild it with `make tiny-model` or pass "
                        "--model FOLDER (a released VideoChat-Flash checkpoint)")
    return WEIGHTS
