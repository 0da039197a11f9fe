"""The configuration class of `model_type` "videochat_flash_qwen" for transformers' AutoConfig under vLLM.

The official config.json is a Qwen2 config plus multimodal keys (`mm_vision_tower`, `mm_projector_type`,
`mm_hidden_size`, `llm_compress_*`, ...; small models also carry a `vision_config` block): a Qwen2Config
subclass keeps them as attributes, and vLLM's Qwen2 reads the LLM part from the same object. `hico_config`
gives hico's parsed and validated view of it (the tower sizes, the clip geometry, the dropout setting).
"""

from __future__ import annotations

from transformers import Qwen2Config

from hico.checkpoint import HicoConfig


class VideoChatFlashConfig(Qwen2Config):
    model_type = "videochat_flash_qwen"

    def hico_config(self) -> HicoConfig:
        return HicoConfig.from_official(self.to_dict(), f"{getattr(self, '_name_or_path', '') or 'config'}")
