"""VideoChat-Flash on vLLM: a plugin that lets `vllm serve CHECKPOINT` and `vllm.LLM` run the released checkpoints.

vLLM loads `register` through its `vllm.general_plugins` entry point (installed with `pip install hico[vllm]`)
in every process it starts. It registers:
- the configuration class of `model_type` "videochat_flash_qwen" with transformers' AutoConfig
  (`hico.vllm.config`), so that no remote code is needed;
- the official architecture `VideoChatFlashQwenForCausalLM` with vLLM's model registry
  (`hico.vllm.model`: hico's tower, clip-level merging and projector beside vLLM's own Qwen2);
- the multimodal processor (`hico.vllm.processor`): a video file, URL or bytes read by hico's reader with the
  official sampling and time message, 16 placeholder tokens per frame in the official prompt layout; images too;
- a video loader backend "hico" that hands the encoded bytes of a `video_url` to that processor undecoded,
  chosen automatically for this model type, and the official chat template as the fallback when a
  checkpoint's tokenizer has none.

In-LLM progressive dropout is not run under vLLM (its attention and KV cache are vLLM's): a checkpoint whose
config turns it on is served without it, with a warning; the released checkpoints have it off.
"""

from __future__ import annotations

ARCHITECTURE = "VideoChatFlashQwenForCausalLM"
MODEL_TYPE = "videochat_flash_qwen"
VIDEO_BACKEND = "hico"
VIDEO_PROCESSOR = "HicoVideoReader"  # the name the loader backend is registered under for this model type


def register() -> None:
    """vLLM's plugin hook: make the architecture, its config, processor, loader and template known."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from hico.vllm.config import VideoChatFlashConfig

    try:
        AutoConfig.register(MODEL_TYPE, VideoChatFlashConfig)
    except ValueError:  # registered already (the hook runs once per process, but a test may call it again)
        pass
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "hico.vllm.model:VideoChatFlashForCausalLM")
    _register_media()


def _register_media() -> None:
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY
    from vllm.transformers_utils.chat_templates.registry import (_MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK,
                                                                register_chat_template_fallback_path)

    from hico.vllm.processor import CHAT_TEMPLATE, HicoVideoLoader

    if VIDEO_BACKEND not in VIDEO_LOADER_REGISTRY.name2class:
        VIDEO_LOADER_REGISTRY.register(VIDEO_BACKEND, video_processor=VIDEO_PROCESSOR)(HicoVideoLoader)
    # vLLM picks a video loader by the model's video processor class name, found from its model_type when the
    # checkpoint has no preprocessor config (the released ones have none): name ours for this model type only.
    VIDEO_PROCESSOR_MAPPING_NAMES.setdefault(MODEL_TYPE, {"torchvision": VIDEO_PROCESSOR})
    if MODEL_TYPE not in _MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK:
        register_chat_template_fallback_path(MODEL_TYPE, CHAT_TEMPLATE)
