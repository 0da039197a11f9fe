"""vLLM's multimodal processing for VideoChat-Flash: videos and images in, placeholder tokens and uint8 frames out.

A video item is a file path, `file://` path, raw bytes, or what vLLM's OpenAI server fetched for a `video_url`
(the loader backend "hico" hands the bytes over undecoded). hico's reader decodes it, as FFmpeg does, at the
official sampling (`dynamic_fps1`: about 1 frame/s, 64..512 frames, a multiple of 8), which
`--mm-processor-kwargs` or a request's `mm_processor_kwargs` change:

    {"max_num_frames": 256, "min_num_frames": 32, "policy": "dynamic_fps1" | "middle" | "fps2",
     "local_num_frames": 8, "start": 10.0, "end": 70.0, "decode_timeout": 30}

Frames already decoded (an (T, H, W, 3) uint8 array, as vLLM's own loaders give) are taken as sampled. Each
frame is resized to the tower's size (the official bicubic squash) and sent on as uint8; a short last clip is
padded with its last frame. An image is one clip of 4 copies of itself: 64 tokens.

The prompt is laid out as the official `chat()` lays it out: the text around `<image>` is tokenized piece by
piece (so no BPE merge crosses the placeholder), `<image>` becomes 16 placeholder tokens per frame, and the
time message goes after the newline that follows it: `<image>\\n{time message} {question}`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.media import MediaWithBytes
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser, ProcessorBatchItems
from vllm.multimodal.processing import (BaseDummyInputsBuilder, BaseMultiModalProcessor, BaseProcessingInfo,
                                        PromptReplacement, PromptUpdate, PromptUpdateDetails)
from vllm.multimodal.processing.processor import PlaceholderFeaturesInfo
from vllm.multimodal.video import VideoLoader

from hico.clips import FRAMES_PER_CLIP, TOKENS_PER_FRAME
from hico.errors import HicoError, OptionError
from hico.prompt import IMAGE
from hico.video.preprocess import resize_frame
from hico.video.sampling import SamplingOptions, time_message

CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")
SAMPLING_KEYS = ("policy", "max_num_frames", "min_num_frames", "local_num_frames", "start", "end")
PROCESSOR_KEYS = (*SAMPLING_KEYS, "decode_timeout")
DEFAULT_DECODE_TIMEOUT = 30.0


@dataclass(frozen=True)
class VideoSource:
    """An encoded video for hico's reader: a file on disk (`path`) or its bytes (`data`), with a digest of its
    content that vLLM's caches key it by."""

    digest: str
    path: str | None = None
    data: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_path(cls, path: str | Path) -> VideoSource:
        from hico.memory import file_digest

        path = Path(str(path).removeprefix("file://"))
        if not path.exists():
            raise HicoError(f"{path}: no such video file; check the path")
        return cls(digest=f"file:{file_digest(path)}", path=str(path))

    @classmethod
    def from_bytes(cls, data: bytes) -> VideoSource:
        return cls(digest=f"bytes:{hashlib.blake2b(data, digest_size=16).hexdigest()}", data=data)


class HicoVideoLoader(VideoLoader):
    """vLLM's video loader backend "hico": keeps a `video_url`'s bytes encoded, for the processor to read."""

    @classmethod
    def load_bytes(cls, data: bytes, **kwargs) -> tuple[VideoSource, dict[str, Any]]:
        return VideoSource.from_bytes(data), {}


def as_video_source(item: object) -> VideoSource | None:
    """The VideoSource an input item names, or None when it is something else (frames, embeddings)."""
    if isinstance(item, MediaWithBytes):
        item = item.media
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], VideoSource):
        return item[0]
    if isinstance(item, VideoSource):
        return item
    if isinstance(item, (str, Path)):
        return VideoSource.from_path(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return VideoSource.from_bytes(bytes(item))
    return None


class HicoVideoItems(ProcessorBatchItems):
    """Video items that are encoded files (`VideoSource`), decoded frames, or (frames, metadata) pairs."""

    def __init__(self, data: Sequence[object]) -> None:
        super().__init__(list(data), "video")

    def get_item_for_hash(self, index: int) -> object:
        item = self.data[index]
        return item.digest if isinstance(item, VideoSource) else item


class HicoDataParser(MultiModalDataParser):
    """vLLM's parser, plus video inputs given as paths, bytes or what the "hico" loader returns."""

    def _parse_video_data(self, data):
        if data is None or self.is_embeddings(data):
            return super()._parse_video_data(data)
        items = data if isinstance(data, list) and not _is_frame_list(data) else [data]
        try:
            sources = [as_video_source(item) for item in items]
        except HicoError as exc:
            raise ValueError(str(exc)) from exc
        if not any(source is not None for source in sources):
            return super()._parse_video_data(data)
        return HicoVideoItems([source if source is not None else _frames_item(item)
                               for source, item in zip(sources, items)])


def _is_frame_list(data: list) -> bool:
    """A list of frames (one video), not a list of videos."""
    return len(data) > 0 and all(isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 3 for x in data)


def _frames_item(item: object) -> object:
    if isinstance(item, list):
        return np.stack([np.asarray(frame) for frame in item])
    return item


class HicoProcessingInfo(BaseProcessingInfo):

    def get_hf_processor(self, **kwargs: object):
        return None  # no transformers processor: `HicoMultiModalProcessor._call_hf_processor` does its work

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {}

    def get_data_parser(self) -> MultiModalDataParser:
        return HicoDataParser(expected_hidden_size=self._get_expected_hidden_size(),
                              allow_missing_mm_embeddings=self.allow_missing_mm_embeddings)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"video": 1, "image": 1}  # the official prompt holds one <image>

    def hico_config(self):
        return self.get_hf_config().hico_config()

    def image_size(self) -> int:
        return self.hico_config().vision.image_size

    def max_frames(self, seq_len: int) -> int:
        """The most frames a video may bring: the sampling cap, and what fits the context."""
        kwargs = self.ctx.get_merged_mm_kwargs({})
        cap = int(kwargs.get("max_num_frames", SamplingOptions().max_num_frames))
        fit = max(FRAMES_PER_CLIP, (seq_len - 64) // TOKENS_PER_FRAME // FRAMES_PER_CLIP * FRAMES_PER_CLIP)
        if cap < 0:
            return fit
        return min(-(-cap // FRAMES_PER_CLIP) * FRAMES_PER_CLIP, fit)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"video": self.max_frames(seq_len) * TOKENS_PER_FRAME, "image": FRAMES_PER_CLIP * TOKENS_PER_FRAME}

    def placeholder_id(self) -> int:
        """The token id the visual positions carry (their embeddings are replaced): an id no prompt text
        produces, `<|video_pad|>` where the vocabulary has it, else the end-of-text token."""
        tokenizer = self.get_tokenizer()
        vocab = tokenizer.get_vocab()
        for name in ("<|video_pad|>", "<|endoftext|>"):
            if name in vocab:
                return vocab[name]
        return tokenizer.eos_token_id


class HicoDummyInputsBuilder(BaseDummyInputsBuilder[HicoProcessingInfo]):

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE * (mm_counts.get("video", 0) + mm_counts.get("image", 0))

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None):
        size = self.info.image_size()
        data = {}
        if mm_counts.get("video", 0):
            frames = np.zeros((self.info.max_frames(seq_len), size, size, 3), dtype=np.uint8)
            data["video"] = [frames] * mm_counts["video"]
        if mm_counts.get("image", 0):
            data["image"] = [np.zeros((size, size, 3), dtype=np.uint8)] * mm_counts["image"]
        return data


@dataclass
class _Sampled:
    frames: np.ndarray  # (T padded to whole clips, S, S, 3) uint8
    num_frames: int  # sampled frames (what the time message counts)
    time_msg: str | None


class HicoMultiModalProcessor(BaseMultiModalProcessor[HicoProcessingInfo]):

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        try:
            return self._process(hf_data, hf_kwargs)
        except HicoError as exc:  # vLLM answers a ValueError with 400 and its message: the user's input is at fault
            raise ValueError(str(exc)) from exc

    def _process(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        kwargs = self.info.ctx.get_merged_mm_kwargs(hf_kwargs)
        unknown = sorted(set(kwargs) - set(PROCESSOR_KEYS) - {"return_tensors", "truncation"})
        if unknown:
            raise OptionError(f"unknown mm_processor_kwargs {unknown}; VideoChat-Flash takes {list(PROCESSOR_KEYS)}")
        size = self.info.image_size()
        tokenizer = self.info.get_tokenizer()
        out: dict[str, object] = {}
        videos = [self._sample(item, size, kwargs) for item in hf_data.get("videos", [])]
        if videos:
            out["pixel_values_videos"] = torch.from_numpy(np.concatenate([v.frames for v in videos]))
            out["video_num_frames"] = torch.tensor([len(v.frames) for v in videos])
            times = [tokenizer.encode(_time_text(v.time_msg), add_special_tokens=False) for v in videos]
            out["video_time_ids"] = torch.tensor([t for ids in times for t in ids], dtype=torch.long)
            out["video_time_len"] = torch.tensor([len(ids) for ids in times])
        images = hf_data.get("images", [])
        if images:
            clips = [np.repeat(resize_frame(_rgb(image), size)[None], FRAMES_PER_CLIP, axis=0) for image in images]
            out["pixel_values_images"] = torch.from_numpy(np.stack(clips))
        return BatchFeature(out)

    def _sample(self, item: object, size: int, kwargs: Mapping[str, object]) -> _Sampled:
        source = as_video_source(item)
        if source is not None:
            return read_video(source, size, sampling_options(kwargs),
                              float(kwargs.get("decode_timeout", DEFAULT_DECODE_TIMEOUT)))
        frames, metadata = item if isinstance(item, tuple) else (item, None)
        count = len(frames)
        duration = (metadata or {}).get("duration")
        message = time_message(float(duration), count) if duration else None
        return _Sampled(frames_for_model(frames, size), count, message)

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]):
        fields = {}
        if "pixel_values_videos" in hf_inputs:
            fields.update(pixel_values_videos=MultiModalFieldConfig.flat_from_sizes(
                "video", hf_inputs["video_num_frames"]),
                video_num_frames=MultiModalFieldConfig.batched("video"),
                video_time_ids=MultiModalFieldConfig.flat_from_sizes("video", hf_inputs["video_time_len"]),
                video_time_len=MultiModalFieldConfig.batched("video"))
        if "video_embeds" in hf_inputs:
            fields["video_embeds"] = MultiModalFieldConfig.batched("video")
        if "pixel_values_images" in hf_inputs:
            fields["pixel_values_images"] = MultiModalFieldConfig.batched("image")
        if "image_embeds" in hf_inputs:
            fields["image_embeds"] = MultiModalFieldConfig.batched("image")
        return fields

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        placeholder = self.info.placeholder_id()
        tokenizer = self.info.get_tokenizer()
        image = tokenizer.encode(IMAGE, add_special_tokens=False)

        def video(index: int) -> PromptUpdateDetails:
            out = out_mm_kwargs["video"][index]
            if "video_embeds" in out:
                count, time_ids = len(out["video_embeds"].data), []
            else:
                count = int(out["video_num_frames"].data) * TOKENS_PER_FRAME
                time_ids = out["video_time_ids"].data.tolist()
            return PromptUpdateDetails.select_token_id([placeholder] * count + time_ids, placeholder)

        def still(index: int) -> PromptUpdateDetails:
            out = out_mm_kwargs["image"][index]
            count = len(out["image_embeds"].data) if "image_embeds" in out else FRAMES_PER_CLIP * TOKENS_PER_FRAME
            return PromptUpdateDetails.select_token_id([placeholder] * count, placeholder)

        return [PromptReplacement(modality="video", target=image, replacement=video),
                PromptReplacement(modality="image", target=image, replacement=still)]

    def _apply_prompt_updates(self, token_ids: list[int], mm_prompt_updates):
        """Lay the prompt out as the official code does (see the module's docstring) instead of vLLM's
        in-place token replacement."""
        placeholder = self.info.placeholder_id()
        tokenizer = self.info.get_tokenizer()
        # The official prompt holds one item; vLLM's warm-up asks for one video and one image at once (in that order).
        items = [(modality, index, updates[0].content.full)
                 for modality, per_item in mm_prompt_updates.items() for index, updates in enumerate(per_item)]
        text = tokenizer.decode(token_ids, skip_special_tokens=False)
        pieces = text.split(IMAGE)
        if len(pieces) - 1 != len(items):
            raise ValueError(f"the prompt holds {len(pieces) - 1} {IMAGE} placeholders for {len(items)} "
                             "video/image inputs; put exactly one where the video goes")
        ids = _encode(tokenizer, pieces[0])
        placeholders: dict[str, list[PlaceholderFeaturesInfo]] = {}
        for (modality, index, full), after in zip(items, pieces[1:]):
            count = next((i for i, t in enumerate(full) if t != placeholder), len(full))
            if count < len(full):  # the time message: after the newline that follows the placeholder (a prompt
                # with no newline there, as the official NIAH prompt, has none)
                timing = tokenizer.decode(full[count:], skip_special_tokens=False)
                after = "\n" + timing + after.removeprefix("\n") if after.startswith("\n") else after
            placeholders.setdefault(modality, []).append(
                PlaceholderFeaturesInfo(modality, index, len(ids), [placeholder] * count, None))
            ids += [placeholder] * count + _encode(tokenizer, after)
        return ids, placeholders


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _time_text(time_msg: str | None) -> str:
    """What goes between the placeholder's newline and the question: the stripped message and a space."""
    return f"{time_msg.strip()} " if time_msg else ""


def _rgb(image: object) -> np.ndarray:
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image or frame of shape (H, W, 3), got {array.shape}")
    return array.astype(np.uint8, copy=False)


def frames_for_model(frames, size: int) -> np.ndarray:
    """Decoded RGB frames (any size) -> (T, size, size, 3) uint8, resized as the official processor does and
    padded to whole clips: what the model side (`hico.vllm.model.encode_frames`) takes."""
    return _pad_clips(np.stack([resize_frame(_rgb(frame), size) for frame in frames]))


def _pad_clips(frames: np.ndarray) -> np.ndarray:
    """Whole clips: a short last clip repeats its last frame, as hico's reader pads it."""
    short = -len(frames) % FRAMES_PER_CLIP
    return np.concatenate([frames, np.repeat(frames[-1:], short, axis=0)]) if short else frames


def sampling_options(kwargs: Mapping[str, object]) -> SamplingOptions:
    """The official sampling with the mm_processor_kwargs that change it. A `max_num_frames` below the official
    floor of 64 frames lowers the floor with it (as `hico chat --max-frames` does), unless `min_num_frames`
    is given too (the official rule then: the floor wins)."""
    given = {key: kwargs[key] for key in SAMPLING_KEYS if kwargs.get(key) is not None}
    try:
        if "max_num_frames" in given and "min_num_frames" not in given and int(given["max_num_frames"]) > 0:
            given["min_num_frames"] = min(SamplingOptions().min_num_frames, int(given["max_num_frames"]))
        return SamplingOptions(**given)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"mm_processor_kwargs {given}: {exc}") from exc


def read_video(source: VideoSource, size: int, sampling: SamplingOptions, timeout: float) -> _Sampled:
    """Decode a video's sampled frames with hico's reader (in its decode worker), resized to `size`."""
    from hico.video.reader import Video

    path, temporary = source.path, None
    if path is None:
        handle, temporary = tempfile.mkstemp(prefix="hico-vllm-", suffix=".video")
        with os.fdopen(handle, "wb") as out:
            out.write(source.data or b"")
        path = temporary
    try:
        with Video(path, timeout=timeout) as video:
            plan = video.plan(sampling)
            frames = np.stack([frame.pixels for frame in video.frames(plan, size)])
    except HicoError as exc:
        if temporary is None:
            raise
        raise HicoError(str(exc).replace(temporary, "the video sent")) from exc
    finally:
        if temporary is not None:
            os.unlink(temporary)
    return _Sampled(_pad_clips(frames), plan.num_frames, plan.time_msg)
