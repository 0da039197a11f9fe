"""hico: long-video understanding with hierarchical visual-token compression (a VideoChat-Flash runtime).

`hico.load(path)` loads a checkpoint; `hico.video` reads videos. Imports are lazy so that the decode worker
(which imports this package) starts without torch.
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


def __getattr__(name: str):
    if name in ("load", "Hico"):
        from hico import api

        return getattr(api, name)
    raise AttributeError(f"module 'hico' has no attribute {name!r}")
