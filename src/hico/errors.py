"""The exceptions users see. Each message names the input, the problem and what to do about it."""

from __future__ import annotations

from pathlib import Path


class HicoError(Exception):
    """Base of every error a user can cause; the CLI prints its message on one line and exits 2."""


class OptionError(HicoError, ValueError):
    """An option value that makes no sense (0 frames, start >= end, unknown policy, ...)."""


class CheckpointError(HicoError):
    """A checkpoint that cannot be loaded (missing or damaged files, a config hico cannot run); the message
    names the file and what to do."""


class NonFiniteError(HicoError, FloatingPointError):
    """NaN or infinite activations: the answer would be garbage, so none is given. `where` names the stage
    (e.g. "LLM layer 3") and `dtype` the precision it ran in; the message says the likely cause."""

    def __init__(self, where: str, dtype: str, cause: str) -> None:
        self.where = where
        self.dtype = dtype
        self.cause = cause
        super().__init__(f"non-finite values (NaN or inf) after {where} in {dtype}: {cause}")


class VideoError(HicoError):
    """A problem with one video input; `path` names it."""

    def __init__(self, path: str | Path, problem: str, advice: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.advice = advice
        super().__init__(f"{self.path}: {problem}. {advice}")


class VideoNotFoundError(VideoError, FileNotFoundError):
    pass


class VideoPermissionError(VideoError, PermissionError):
    pass


class NotAMediaFileError(VideoError):
    pass


class NoVideoStreamError(VideoError):
    pass


class UnsupportedCodecError(VideoError):
    pass


class NoDecodableFramesError(VideoError):
    pass


class CorruptVideoError(VideoError):
    pass


class DecodeTimeoutError(VideoError, TimeoutError):
    pass
