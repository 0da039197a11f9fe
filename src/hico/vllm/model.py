"""`VideoChatFlashQwenForCausalLM` for vLLM: hico's vision side (`hico.visual`) beside vLLM's own Qwen2.

vLLM runs the LLM (its attention kernels, paged KV cache, prefix caching, tensor and pipeline parallelism);
this class encodes the frames the processor sends (uint8, normalised here) clip by clip into 64 tokens each,
and maps the official checkpoint's weight names onto the two parts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from hico.checkpoint import official_to_hico
from hico.prompt import IMAGE
from hico.visual import VisualEncoder, normalize_frames
from hico.vllm.processor import HicoDummyInputsBuilder, HicoMultiModalProcessor, HicoProcessingInfo

logger = init_logger(__name__)

ENCODE_CLIPS = 8  # clips per tower call: bounds the tower's activation memory whatever the video length
DROPOUT_WARNING = ("%s: config.json turns in-LLM visual-token dropout on (mm_llm_compress); vLLM runs the LLM "
                   "without it (every visual token is kept), so answers equal `hico chat --dropout off`")


@MULTIMODAL_REGISTRY.register_processor(HicoMultiModalProcessor, info=HicoProcessingInfo,
                                        dummy_inputs=HicoDummyInputsBuilder)
class VideoChatFlashForCausalLM(nn.Module, SupportsMultiModal, SupportsPP):

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith(("video", "image")):
            return IMAGE
        raise ValueError(f"VideoChat-Flash takes videos and images, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.hico_config = config.hico_config()
        if self.hico_config.dropout_enabled:
            logger.warning_once(DROPOUT_WARNING, vllm_config.model_config.model)
        with self._mark_tower_model(vllm_config, {"video", "image"}):
            self.visual = VisualEncoder(self.hico_config)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(vllm_config=vllm_config, hf_config=config,
                                                             prefix=maybe_prefix(prefix, "language_model"),
                                                             architectures=["Qwen2ForCausalLM"])
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    # --- vision -------------------------------------------------------------------------------------------------
    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return encode_frames(self.visual, frames)

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        embeddings: list[torch.Tensor] = []
        if kwargs.get("video_embeds") is not None:
            embeddings += list(_items(kwargs["video_embeds"]))
        if kwargs.get("pixel_values_videos") is not None:
            sizes = torch.as_tensor(kwargs["video_num_frames"]).flatten().tolist()
            videos = _split(kwargs["pixel_values_videos"], sizes)
            embeddings += [self._encode_frames(video) for video in videos]
        if kwargs.get("image_embeds") is not None:
            embeddings += list(_items(kwargs["image_embeds"]))
        if kwargs.get("pixel_values_images") is not None:
            embeddings += [self._encode_frames(clip) for clip in _items(kwargs["pixel_values_images"])]
        return [e.to(self.visual.dtype) for e in embeddings]

    # --- language model -----------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: object) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Official names: the tower's and projector's go to `visual` under hico's names, the rest (`model.*`,
        `lm_head.*`) to vLLM's Qwen2."""
        visual: set[str] = set()
        llm = self.language_model.load_weights(load_visual_weights(self.visual, weights, visual))
        return {f"language_model.{name}" for name in llm} | {f"visual.{name}" for name in visual}


def encode_frames(visual: VisualEncoder, frames: torch.Tensor) -> torch.Tensor:
    """(T, S, S, 3) uint8 frames, T a whole number of clips -> (T * 16, hidden) visual tokens, encoded
    ENCODE_CLIPS clips at a time."""
    clip = visual.config.local_num_frames
    out = []
    for first in range(0, frames.shape[0], clip * ENCODE_CLIPS):
        pixels = normalize_frames(frames[first:first + clip * ENCODE_CLIPS])
        out.append(visual(pixels.reshape(-1, clip, *pixels.shape[1:])).flatten(0, 1))
    return torch.cat(out)


def load_visual_weights(visual: VisualEncoder, weights: Iterable[tuple[str, torch.Tensor]],
                        loaded: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Copy the tower's and projector's official weights into `visual` (adding their names to `loaded`) as the
    stream passes, and yield the LLM's (`model.*`, `lm_head.*`) for vLLM's Qwen2 loader. Once the stream is
    exhausted, a missing tower or projector weight is an error and the tower's buffers are recomputed."""
    params = dict(visual.named_parameters())
    for name, tensor in weights:
        mapped = official_to_hico(name)
        if mapped.startswith("llm."):
            yield mapped.removeprefix("llm."), tensor
            continue
        if mapped not in params:
            raise ValueError(f"{name}: a tower or projector weight this config has no place for "
                             "(does config.json describe this checkpoint?)")
        with torch.no_grad():
            params[mapped].copy_(tensor.to(params[mapped].dtype))
        loaded.add(mapped)
    missing = sorted(set(params) - loaded)
    if missing:
        raise ValueError(f"the checkpoint lacks tower or projector weights: {missing[:8]}")
    visual.vision.reset_buffers(visual.projector.mlp[0].weight.device)


def _items(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    return list(value)


def _split(value: object, sizes: list[int]) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return list(value.split(sizes))
    return list(value)
