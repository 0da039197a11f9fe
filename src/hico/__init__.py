"""hico: long-video understanding with hierarchical visual-token compression (a VideoChat-Flash runtime).

`hico.load(path)` loads a checkpoint; `hico.video` reads videos. Imports are lazy so that the decode worker
(which imports this package) starts without torch.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("load", "Hico"):
        from hico import api

        return getattr(api, name)
    raise AttributeError(f"module 'hico' has no attribute {name!r}")
