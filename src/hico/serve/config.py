"""Server settings: one dataclass, filled by `hico serve` options or by a Python caller."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from hico.errors import OptionError
from hico.store import MEMORY_BYTES
from hico.video.sampling import SamplingOptions

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServeConfig:
    """Sizes in bytes, times in seconds, counts in requests or videos."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None: no authentication (refused on non-loopback hosts without allow_open)
    allow_paths: tuple[Path, ...] = ()  # roots that file:// URLs may point into (resolved at start)
    allow_remote: bool = False  # fetch http(s):// media URLs (off: refused with a message)
    max_upload_bytes: int = 512 << 20
    max_queue: int = 32  # requests waiting for the model worker; one more gets 429
    cache_dir: Path | None = None  # disk cache of encoded videos, shared with `hico chat --cache`
    memory_cache: int | None = None  # at most this many encoded videos kept in RAM; None: the byte budget alone
    memory_cache_bytes: int = MEMORY_BYTES  # encoded videos and their kept prefixes in RAM (LRU), at most
    upload_dir: Path | None = None  # None: a private temporary folder removed at exit
    upload_ttl: float = 3600.0  # uploads are deleted this long after they arrive
    request_timeout: float = 300.0  # from arrival to the last token; past it the request ends with 504
    max_tokens_limit: int = 4096  # the largest max_tokens a request may ask for
    default_max_tokens: int = 512
    served_model_name: str = ""  # the `model` id clients use; "" = the checkpoint folder's name
    sampling: SamplingOptions = field(default_factory=SamplingOptions)  # when a request names none
    preview_frames: int = 16  # thumbnails in the page's strip
    decode_timeout: float = 30.0  # seconds without decoder progress before a video read fails
    live_sessions: int = 4  # live video sessions (/v1/live) open at once; 0 turns them off
    live_max_tokens: int = 16384  # the largest (and the default) visual-token budget of a live session
    live_max_frame_bytes: int = 4 << 20  # one JPEG or PNG frame of a live session, at most
    live_max_frame_side: int = 4096  # pixels, the longer side of a live frame
    live_queue_frames: int = 16  # a live session's frames waiting for the model; more are dropped (and counted)
    live_idle_timeout: float = 60.0  # a live session that sends nothing this long (and awaits no answer) is closed

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise OptionError(f"--port must be in 0-65535, got {self.port}")
        if self.max_upload_bytes < 1:
            raise OptionError("--max-upload-mb must be positive")
        if self.max_queue < 1:
            raise OptionError(f"--max-queue must be at least 1, got {self.max_queue}")
        if self.memory_cache is not None and self.memory_cache < 1:
            raise OptionError(f"--memory-cache must be at least 1 video, got {self.memory_cache}")
        if self.memory_cache_bytes < 0:
            raise OptionError(f"--memory-cache-mb cannot be negative, got {self.memory_cache_bytes / (1 << 20):g}")
        if self.live_sessions < 0:
            raise OptionError(f"--live-sessions cannot be negative, got {self.live_sessions}")
        for name in ("live_max_tokens", "live_max_frame_bytes", "live_max_frame_side", "live_queue_frames"):
            if getattr(self, name) < 1:
                raise OptionError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("upload_ttl", "request_timeout", "decode_timeout", "live_idle_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise OptionError(f"{name.replace('_', '-')} must be a positive number of seconds, got {value}")
        if not 1 <= self.default_max_tokens <= self.max_tokens_limit:
            raise OptionError("the default max_tokens must be between 1 and the max_tokens limit")
        if self.api_key is not None and len(self.api_key) < 8:
            raise OptionError("the API key must be at least 8 characters long")
        for root in self.allow_paths:
            if not Path(root).is_dir():
                raise OptionError(f"--allow-path {root}: not a folder")

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(root).resolve() for root in self.allow_paths)
