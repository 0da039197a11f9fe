"""Samples -> training features: frames sampled by the stage's rules, token ids and answer-only labels.

`prepare` checks every sample once before training: a video that cannot be opened or sampled, or an image
that cannot be read, is skipped and counted; a sample longer than `max_length` (visual tokens included) is
skipped and counted, never cut. When unreadable samples exceed `max_skip_share` the run stops with an error
that names some of them. A file that breaks later, while training, is replaced by the next sample and counted.
Videos are decoded in one kept worker process per training process (`decoder()`), not one per video.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from hico.atomic import write_text_atomic
from hico.clips import FRAMES_PER_CLIP, TOKENS_PER_CLIP
from hico.errors import HicoError
from hico.train.data import Sample
from hico.train.labels import encode_sample
from hico.train.stages import TrainConfig
from hico.video.preprocess import image_clip, read_image
from hico.video.reader import Video
from hico.video.sampling import SamplingOptions
from hico.video.worker import WorkerClient

log = logging.getLogger(__name__)
_DECODERS: dict[int, WorkerClient] = {}  # process id -> that process's decode worker


class TrainingDataError(HicoError):
    """The training data cannot be used as it is; the message says which samples and why."""


@dataclass
class SkipReport:
    total: int = 0
    too_long: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (sample, reason)
    failed_in_training: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        kept = self.total - len(self.too_long) - len(self.unreadable)
        return (f"{kept} of {self.total} samples kept; skipped {len(self.too_long)} longer than the max length and "
                f"{len(self.unreadable)} with unreadable media")

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps({"total": self.total, "too_long": self.too_long,
                                            "unreadable": self.unreadable,
                                            "failed_in_training": self.failed_in_training}, indent=1))


def decoder() -> WorkerClient:
    """This process's kept decode worker process, started on first use and closed at exit. Keyed by process
    id: a DataLoader worker process (forked or spawned) starts its own and never touches its parent's."""
    client = _DECODERS.get(os.getpid())
    if client is None:
        client = _DECODERS[os.getpid()] = WorkerClient()
        atexit.register(client.close)  # where atexit does not run (forked children), stdin's EOF ends the worker
    return client


def open_video(config: TrainConfig, path: str) -> Video:
    """`path` opened as `config.isolate_decode` says: in this process's decode worker, or in process."""
    return Video(path, isolate=config.isolate_decode, worker=decoder() if config.isolate_decode else None)


def sampling_options(config: TrainConfig, sample: Sample) -> SamplingOptions:
    return SamplingOptions(policy=config.policy, max_num_frames=config.max_frames, min_num_frames=config.min_frames,
                           local_num_frames=FRAMES_PER_CLIP, start=sample.start, end=sample.end)


def time_message(config: TrainConfig, sample: Sample, message: str | None) -> str | None:
    """The sample's time message, or None for the share of samples trained without it (fixed per sample)."""
    if message is None or config.time_message >= 1:
        return message
    draw = zlib.crc32(f"{config.seed}:{sample.source}".encode()) / 2**32
    return message if draw < config.time_message else None


def prepare(samples: list[Sample], tokenizer, config: TrainConfig,
            progress: bool = True) -> tuple[list[Sample], SkipReport]:
    """The usable samples and what was skipped; raises TrainingDataError above the unreadable threshold."""
    report = SkipReport(total=len(samples))
    kept = []
    for sample in tqdm(samples, desc="samples checked", unit="sample", disable=not progress):
        visual, time_msg = 0, None
        try:
            if sample.video:
                with open_video(config, sample.video) as video:
                    plan = video.plan(sampling_options(config, sample))
                visual = -(-plan.num_frames // FRAMES_PER_CLIP) * TOKENS_PER_CLIP
                time_msg = time_message(config, sample, plan.time_msg)
            elif sample.image:
                read_image(sample.image)
                visual = TOKENS_PER_CLIP
        except HicoError as exc:
            report.unreadable.append((sample.source, str(exc)))
            continue
        if encode_sample(sample, tokenizer, config.template, time_msg, visual, config.max_length,
                         config.labels) is None:
            report.too_long.append(sample.source)
            continue
        kept.append(sample)
    share = len(report.unreadable) / max(report.total, 1)
    if share > config.max_skip_share:
        shown = "; ".join(f"{s}: {r}" for s, r in report.unreadable[:3])
        raise TrainingDataError(f"{len(report.unreadable)} of {report.total} samples have unreadable media "
                                f"({share:.0%}, above max_skip_share {config.max_skip_share:.0%}), e.g. {shown}; "
                                "fix the paths (data_root) or raise max_skip_share")
    if not kept:
        raise TrainingDataError(f"no usable training sample: {report.summary()}")
    return kept, report


class ConversationDataset(torch.utils.data.Dataset):
    """Features for the trainer: `ids`, `targets` (labels) and `clips` ((n, 4, 3, S, S) pixels or None)."""

    def __init__(self, samples: list[Sample], tokenizer, config: TrainConfig, image_size: int,
                 report: SkipReport | None = None) -> None:
        self.samples, self.tokenizer, self.config, self.image_size = samples, tokenizer, config, image_size
        self.report = report if report is not None else SkipReport(total=len(samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        for step in range(len(self.samples)):
            sample = self.samples[(index + step) % len(self.samples)]
            try:
                return self._features(sample)
            except HicoError as exc:
                self.report.failed_in_training.append((sample.source, str(exc)))
                log.warning("%s: skipped while training (%s); using the next sample", sample.source, exc)
        raise TrainingDataError("every training sample failed to load")

    def _features(self, sample: Sample) -> dict:
        clips, time_msg = None, None
        if sample.video:
            with open_video(self.config, sample.video) as video:
                plan = video.plan(sampling_options(self.config, sample))
                clips = torch.stack([c.pixels for c in video.clips(plan, self.image_size, FRAMES_PER_CLIP)])
            time_msg = time_message(self.config, sample, plan.time_msg)
        elif sample.image:
            clips = image_clip(read_image(sample.image), self.image_size, FRAMES_PER_CLIP)[None]
        encoded = encode_sample(sample, self.tokenizer, self.config.template, time_msg,
                                0 if clips is None else clips.shape[0] * TOKENS_PER_CLIP, self.config.max_length,
                                self.config.labels)
        if encoded is None:
            raise HicoError(f"{sample.source}: longer than max_length {self.config.max_length} tokens")
        ids, targets = encoded
        return {"ids": ids, "targets": targets, "clips": clips}


def collate(features: list[dict]) -> dict:
    """Lists, not padded tensors: every sample has its own visual span, handled one by one in the model."""
    return {key: [f[key] for f in features] for key in ("ids", "targets", "clips")}
