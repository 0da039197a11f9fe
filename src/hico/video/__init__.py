"""Video ingestion: probe, sample (official policies), decode (seek or forward pass), preprocess, stream clips.

Names are imported on first use so that the decode worker (`python -m hico.video.worker`) starts without
loading torch.
"""

import importlib

_EXPORTS = {
    "hico.video.decode": ("AccessPlan", "DecodeStats", "plan_access"),
    "hico.video.preprocess": ("IMAGENET_MEAN", "IMAGENET_STD", "normalize", "preprocess", "resize_frame"),
    "hico.video.metadata": ("FrameTable", "VideoInfo", "probe"),
    "hico.video.reader": ("CLIP_FRAMES", "TOKENS_PER_FRAME", "Clip", "ReadReport", "SampledFrame", "Video",
                          "open_video", "stream_clips"),
    "hico.video.sampling": ("SamplePlan", "SamplingOptions", "official_frame_indices", "plan_samples", "plan_samples_by_time",
                            "time_message"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'hico.video' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
