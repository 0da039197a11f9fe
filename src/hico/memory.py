"""VideoMemory: a video's compressed visual tokens with their timing, reusable across questions and sessions.

Saved as safetensors (tokens) with JSON metadata; keyed by the video's content hash, the sampling options
and the model's fingerprint, so a cached memory is only reused for the same input, sampling and weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hico.errors import HicoError

HASH_CHUNK = 1 << 20


@dataclass
class VideoMemory:
    tokens: torch.Tensor  # (16 * frames, hidden): 64 per 4-frame clip, in the model's order
    indices: list[int]  # sampled frame indices (padding repeats included)
    times: list[float]  # seconds of each sampled frame
    time_msg: str  # the official time message for this sampling
    duration: float  # seconds, as the time message states it
    source: str  # the video path it came from
    key: str  # content hash + sampling + model

    @property
    def num_frames(self) -> int:
        return len(self.indices)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        meta = {k: v for k, v in asdict(self).items() if k != "tokens"}
        tmp = path.with_suffix(path.suffix + ".partial")
        save_file({"tokens": self.tokens.detach().cpu().contiguous()}, str(tmp), metadata={"hico": json.dumps(meta)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> VideoMemory:
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise HicoError(f"{path}: no such video memory file")
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["hico"])
                tokens = f.get_tensor("tokens")
        except Exception as exc:  # safetensors raises several types for damaged files
            raise HicoError(f"{path}: not a hico video memory file ({exc}); delete it to re-encode") from exc
        return cls(tokens=tokens, **meta)


def file_digest(path: str | Path) -> str:
    """BLAKE2b of a file's bytes, or of a frame folder's names and bytes."""
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode() if path.is_dir() else b"")
        with open(file, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def memory_key(video_digest: str, sampling: object, size: int, model_id: str) -> str:
    text = json.dumps([video_digest, repr(sampling), size, model_id])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
