"""What the engine takes and gives, apart from the model: requests, completions, streams, likelihoods, and the
`Engine` interface that eval and serve call, so that another backend (vLLM) can stand behind them.

    for done in engine.generate_many([Request("talk.mp4", "What is on the whiteboard?")]):
        print(done.answer.text if done.ok else done.error)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hico.dropout import DropSchedule
from hico.errors import HicoError
from hico.generate import Answer, GenerationConfig
from hico.video.sampling import SamplingOptions

if TYPE_CHECKING:
    from hico.memory import VideoMemory
    from hico.store import Stored


@dataclass(frozen=True)
class Request:
    """One question about one video. `video` is a path (decoded and encoded by the engine's store, or taken
    from its cache) or an encoded `VideoMemory`; `video_options` go to the reader (timeout, folder_fps, ...);
    `prompt` replaces the chat template with a whole prompt holding `<image>` once; `prefix_dir` keeps the
    video's prefilled prompt prefix on disk there (as `hico chat --cache` does); `tag` is the caller's."""

    video: str | Path | VideoMemory
    question: str
    history: Sequence[tuple[str, str]] = ()
    config: GenerationConfig = GenerationConfig()
    sampling: SamplingOptions = SamplingOptions()
    dropout: DropSchedule | str | None = None
    prompt: str | None = None
    video_options: Mapping[str, object] = field(default_factory=dict)
    prefix_dir: str | Path | None = None
    cancel: object = None  # an Event or a callable: stop generating when set
    on_token: Callable[[str], None] | None = None
    tag: object = None


@dataclass(frozen=True)
class Completion:
    """A request's outcome: an `answer`, or the `error` that kept it from one (an unreadable video, options
    the video cannot meet, ...); `stored` says where the video's tokens came from."""

    request: Request
    answer: Answer | None
    error: HicoError | None
    stored: Stored | None
    seconds: float  # this request's time, its video's decoding and encoding included

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Engine(Protocol):
    """What eval and serve need from a backend: answers to requests, in order."""

    def generate_many(self, requests: Iterable[Request]) -> Iterator[Completion]: ...


@dataclass(frozen=True)
class Likelihood:
    """A teacher-forced continuation: its tokens, each one's log-probability, and the arg-max token at each
    of its positions (what greedy decoding would have picked there)."""

    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    argmax_ids: tuple[int, ...]

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def greedy(self) -> bool:
        """Whether greedy decoding would produce exactly the continuation."""
        return self.argmax_ids == self.token_ids


class AnswerStream:
    """Text pieces of an answer as they are generated; `answer` once the iteration is over."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as done:
            self.answer = done.value
            raise

    def close(self) -> None:
        """Stop early (the generator's cleanup runs); `answer` stays None."""
        self._pieces.close()
