"""The clip geometry of VideoChat-Flash, in one place: the video encoder sees 4 frames at a time, and clip-level
merging leaves 64 tokens per clip, 16 per frame. (A checkpoint's config.json may say otherwise:
`HicoConfig.local_num_frames` and `tokens_per_clip` carry what it says; these are the released values and
the defaults.) No imports: the decode worker reads it without torch."""

FRAMES_PER_CLIP = 4  # mm_local_num_frames
TOKENS_PER_CLIP = 64  # after clip-level merging (tome16_mlp_hd64)
TOKENS_PER_FRAME = TOKENS_PER_CLIP // FRAMES_PER_CLIP
IMAGE_TOKEN_INDEX = -200  # the <image> placeholder id in official prompts (`tokenizer_image_token`)
