"""hico: long-video understanding with hierarchical visual-token compression (a VideoChat-Flash runtime).

`hico.load(path)` loads a checkpoint as a `Hico` engine (`generate`, `score`, `generate_many`); `hico.VideoStore`
encodes and caches videos for it; `hico.video` reads videos. Imports are lazy so that the decode worker (which
imports this package) starts without torch.
"""

import logging

__version__ = "0.1.0"


class _ImportNoise(logging.Filter):
    """Drops the notes importing torchao logs (transformers imports it whenever it is installed, as hico's
    `--quantize int8` needs): its optional GPU kernels that a CPU build cannot load, and a torch deprecation
    addressed to torchao's developers. Anything else those loggers say passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("Failed to load") and "torchao" in record.getMessage()
                    or "is an Enum subclass and is now natively supported" in message)


for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).addFilter(_ImportNoise())


_EXPORTS = {"load": "hico.api", "Hico": "hico.api", "VideoStore": "hico.store", "Stored": "hico.store",
            "GenerationConfig": "hico.generate", "Answer": "hico.generate", "Request": "hico.engine",
            "Completion": "hico.engine", "Engine": "hico.engine", "Likelihood": "hico.engine",
            "DropSchedule": "hico.compress", "SamplingOptions": "hico.video.sampling", "VideoMemory": "hico.memory"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hico' has no attribute {name!r}")
