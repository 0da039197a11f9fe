"""VideoMemory: a video's compressed visual tokens with their timing, reusable across questions and sessions.

Saved as safetensors (tokens) with JSON metadata; keyed by the video's content hash, the sampling options
and the model's fingerprint, so a cached memory is only reused for the same input, sampling and weights.
A memory also keeps the prefilled prompt prefix that ends with its visual tokens (`VideoPrefix`), so that a
question prefills only its own tokens; in memory, and on disk beside the memory when asked, keyed by the
memory's key, the model's fingerprint and variant (dtype, quantization), the dropout schedule and the prefix ids.
The metadata also holds the tokens' size and checksum: `load_cached` finds a truncated, corrupted or foreign
cache entry, warns, and lets the caller encode again. Entries are renamed into place whole, so concurrent
writers of one key each leave a complete file and the last one stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from hico.atomic import atomic_path, remove_stale_temporaries
from hico.errors import HicoError
from hico.model import VideoPrefix, VisualSpan

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20
PREFIX_FORMAT = 1
PREFIXES_KEPT = 2  # prefixes a memory holds in RAM (one per dropout schedule/model in use); the oldest goes first
PREFIX_BYTES = 2 << 30  # and the bytes they may take together; a prefix larger than this is not kept


class MemoryFileError(HicoError):
    """A video memory file that is missing, damaged, or not what it claims to be."""


@dataclass
class VideoMemory:
    tokens: torch.Tensor  # (16 * frames, hidden): 64 per 4-frame clip, in the model's order
    indices: list[int]  # sampled frame indices (padding repeats included)
    times: list[float]  # seconds of each sampled frame
    time_msg: str  # the official time message for this sampling
    duration: float  # seconds, as the time message states it
    source: str  # the video path it came from
    key: str  # content hash + sampling + model
    prefixes: dict[str, VideoPrefix] = field(default_factory=dict, repr=False, compare=False)  # by prefix_key

    @property
    def num_frames(self) -> int:
        return len(self.indices)

    def content_key(self) -> str:
        """The memory's key, or for a memory never cached a digest of its tokens (so a disk prefix fits them)."""
        if self.key:
            return self.key
        data = self.tokens.detach().cpu().contiguous().view(torch.uint8).numpy()
        return "tokens-" + hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()

    def keep_prefix(self, key: str, prefix: VideoPrefix, max_bytes: int = PREFIX_BYTES) -> None:
        """Keep a prefix for the next questions: at most PREFIXES_KEPT of them and `max_bytes` together,
        the least recently used going first; one larger than `max_bytes` alone is not kept."""
        self.prefixes.pop(key, None)
        if prefix.nbytes > max_bytes:
            return
        self.prefixes[key] = prefix
        while len(self.prefixes) > PREFIXES_KEPT or self.prefix_nbytes > max_bytes:
            self.prefixes.pop(next(iter(self.prefixes)))

    @property
    def prefix_nbytes(self) -> int:
        return sum(prefix.nbytes for prefix in self.prefixes.values())

    def save(self, path: str | Path) -> Path:
        """Write the memory (under a unique temporary name, renamed into place) with its size and checksum."""
        from safetensors.torch import save_file

        path = Path(path)
        tokens = self.tokens.detach().cpu().contiguous()
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("tokens", "prefixes")}
        check = {"nbytes": tokens.nbytes, "checksum": tokens_checksum(tokens)}
        remove_stale_temporaries(path.parent)  # left by killed writers; a cache folder is never cleaned otherwise
        with atomic_path(path) as tmp:
            save_file({"tokens": tokens}, str(tmp), metadata={"hico": json.dumps(meta), "check": json.dumps(check)})
        return path

    @classmethod
    def load(cls, path: str | Path, key: str | None = None) -> VideoMemory:
        """Read a memory file; with `key`, it must be the memory of that cache key. Raises MemoryFileError
        for a missing, truncated, corrupted or foreign file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise MemoryFileError(f"{path}: no such video memory file")
        try:
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
                meta = json.loads(metadata["hico"])
                tokens = f.get_tensor("tokens")
            memory = cls(tokens=tokens, **meta)
        except Exception as exc:  # safetensors, json and the dataclass raise several types for damaged files
            raise MemoryFileError(f"{path}: not a hico video memory file ({type(exc).__name__}: {exc})") from exc
        check = json.loads(metadata.get("check", "null") or "null")
        if not isinstance(check, dict):
            raise MemoryFileError(f"{path}: has no checksum (written by an older hico)")
        if tokens.nbytes != check.get("nbytes") or tokens_checksum(tokens) != check.get("checksum"):
            raise MemoryFileError(f"{path}: the tokens do not match their size or checksum (corrupted)")
        if key is not None and memory.key != key:
            raise MemoryFileError(f"{path}: holds the memory of another key ({memory.key!r}, not {key!r})")
        return memory


def load_cached(path: str | Path, key: str) -> VideoMemory | None:
    """The cached memory of `key`, or None when there is none or the entry is damaged or foreign (warned
    about; the caller encodes again and its save replaces the entry)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return VideoMemory.load(path, key)
    except MemoryFileError as exc:
        log.warning("%s; encoding the video again to replace it", exc)
        return None


def tokens_checksum(tokens: torch.Tensor) -> str:
    """BLAKE2b of the tokens' bytes, dtype and shape."""
    digest = hashlib.blake2b(f"{tokens.dtype} {tuple(tokens.shape)}".encode(), digest_size=16)
    digest.update(tokens.contiguous().flatten().view(torch.uint8).numpy().tobytes() if tokens.numel() else b"")
    return digest.hexdigest()


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


def prefix_key(memory_key: str, model_id: str, variant: str, schedule: object, prefix_ids: list[int]) -> str:
    """What a kept prefix depends on besides the weights' fingerprint: the video's tokens, the model variant
    (dtype, quantization), the dropout schedule and the prompt tokens before the video."""
    text = json.dumps([PREFIX_FORMAT, memory_key, model_id, variant, repr(schedule), prefix_ids])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def save_prefix(prefix: VideoPrefix, path: str | Path) -> Path:
    """Write a prefix atomically (a partial file never takes the final name)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {"kept": prefix.kept}
    for index, (keys, values) in enumerate(prefix.kv):
        tensors[f"keys.{index}"], tensors[f"values.{index}"] = keys, values
    if prefix.hidden is not None:
        tensors["hidden"] = prefix.hidden
    meta = {"format": PREFIX_FORMAT, "layer": prefix.layer, "current": prefix.current,
            "span": [prefix.span.start, prefix.span.count]}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"hico-prefix": json.dumps(meta)})
    return path


def load_prefix(path: str | Path, device: torch.device | str = "cpu") -> VideoPrefix | None:
    """A saved prefix, or None when the file is missing, damaged or of another format (it is then rebuilt)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["hico-prefix"])
        if meta.get("format") != PREFIX_FORMAT:
            return None
        tensors = load_file(str(path), device=str(device))
        kv = [(tensors[f"keys.{i}"], tensors[f"values.{i}"]) for i in range(meta["layer"])]
        return VideoPrefix(kv, tensors.get("hidden"), meta["layer"], tensors["kept"], meta["current"],
                           VisualSpan(*meta["span"]))
    except Exception:  # safetensors raises several types for damaged files; a prefix is only a cache
        return None
