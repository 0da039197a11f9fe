"""Released-checkpoint layout: config parsing and validation, the official key names, safetensors load/save,
and checkpoints named by their Hugging Face Hub id.

A checkpoint folder holds the official `config.json` (a Qwen2 config plus multimodal keys, optionally a
`vision_config` block that small models use to size the tower), `model.safetensors` or a sharded index, and
usually the tokenizer files. A Hub id (`OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448`) is resolved to a folder
of the Hub cache by `resolve_checkpoint`, downloading only the files hico reads (HUB_FILES).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config

from hico.atomic import atomic_path, write_text_atomic
from hico.clips import FRAMES_PER_CLIP, TOKENS_PER_CLIP
from hico.dropout import DropSchedule
from hico.errors import CheckpointError, HicoError, OptionError
from hico.vision.internvideo2 import OFFICIAL_MLP_RATIO, InternVideo2Config
from hico.vision.umt import UMTConfig

VISION_PREFIX = "model.vision_tower.vision_tower.encoder."  # UMT towers
INTERNVIDEO2_PREFIX = "model.vision_tower.vision_tower."  # the InternVideo2 tower has no `encoder` level
PROJECTOR_PREFIX = "model.mm_projector."
SUPPORTED_PROJECTOR = "tome16_mlp_hd64"
POOLING_PROJECTOR = "avgpool16_mlp"  # hico's own: average pooling instead of merging (the ablation baseline)
UMT_DEPTH = 24  # UMT-L blocks in the pretrained tower; select_layer -2 builds 23 of them
INTERNVIDEO2_DEPTH = 40  # InternVideo2-1B blocks; select_layer -2 builds 39 of them
# What hico reads from a Hub repo: config, safetensors weights (+ shard index), tokenizer files, a LoRA adapter's
# config. Released repos also hold the tower's init weights as .bin/.pt and the remote code: never fetched.
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
             "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "adapter_config.json"]
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class HicoConfig:
    """Everything hico needs from an official config.json."""

    vision_tower: str
    vision: UMTConfig | InternVideo2Config
    llm: dict  # keyword arguments for transformers.Qwen2Config
    mm_hidden_size: int
    hidden_size: int
    local_num_frames: int = FRAMES_PER_CLIP
    tokens_per_clip: int = TOKENS_PER_CLIP
    clip_compression: str = "merge"  # "merge" (official ToMe) or "pool" (POOLING_PROJECTOR)
    dropout_schedule: DropSchedule = field(default_factory=DropSchedule)  # as configured (llm_compress_*)
    dropout_enabled: bool = False  # mm_llm_compress: off in every released config
    official: dict = field(default_factory=dict, repr=False)

    @property
    def dropout(self) -> DropSchedule:
        """The schedule inference uses by default: the configured one if mm_llm_compress is on, else none."""
        return self.dropout_schedule if self.dropout_enabled else DropSchedule()

    def schedule(self, dropout: DropSchedule | str | None = None) -> DropSchedule:
        """The schedule a dropout setting (anything `DropSchedule.parse` reads) stands for on this checkpoint, as
        `Hico.schedule` resolves it: None or "default" is `dropout`, "model" the configured schedule even where
        mm_llm_compress leaves it off (an OptionError when there is none), "off" none; it must fit the depth."""
        setting = DropSchedule.parse(dropout)
        if setting == "default":
            schedule = self.dropout
        elif setting == "model":
            schedule = self.dropout_schedule
            if not schedule.enabled:
                raise OptionError("--dropout model: the checkpoint's config.json sets no in-LLM dropout "
                                  "(llm_compress_layer_list); use --dropout off")
        else:
            schedule = setting
        schedule.check_depth(self.llm["num_hidden_layers"])
        return schedule

    @classmethod
    def from_official(cls, raw: dict, source: str = "config.json") -> HicoConfig:
        tower = str(raw.get("mm_vision_tower", ""))
        if not is_internvideo2(tower) and "umt" not in tower.lower():
            raise CheckpointError(f"{source}: unknown vision tower mm_vision_tower={tower!r}; expected 'umt-large', "
                                  "'umt-hd-large' or 'internvideo2'")
        projector = raw.get("mm_projector_type", SUPPORTED_PROJECTOR)
        if projector not in (SUPPORTED_PROJECTOR, POOLING_PROJECTOR):
            raise CheckpointError(f"{source}: projector {projector!r} is not supported; hico implements "
                                  f"{SUPPORTED_PROJECTOR!r} (and {POOLING_PROJECTOR!r}, its pooling baseline)")
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                               "intermediate_size") if k not in raw]
        if missing:
            raise CheckpointError(f"{source}: missing keys {missing}; is this a VideoChat-Flash config.json?")
        vision = _vision_config(raw, tower)
        mm_hidden = int(raw.get("mm_hidden_size", vision.hidden_size))
        if mm_hidden != vision.hidden_size:
            raise CheckpointError(f"{source}: mm_hidden_size {mm_hidden} does not match the tower width "
                                  f"{vision.hidden_size}")
        enabled = bool(raw.get("mm_llm_compress", False))
        clip_frames = int(raw.get("mm_local_num_frames", FRAMES_PER_CLIP))
        return cls(vision_tower=tower, vision=vision, llm=_llm_kwargs(raw), mm_hidden_size=mm_hidden,
                   hidden_size=int(raw["hidden_size"]), local_num_frames=clip_frames,
                   dropout_schedule=_dropout(raw, enabled, source), dropout_enabled=enabled,
                   clip_compression="pool" if projector == POOLING_PROJECTOR else "merge", official=dict(raw))

    @property
    def vision_prefix(self) -> str:
        """Where the tower's weights sit in the official state dict."""
        return INTERNVIDEO2_PREFIX if is_internvideo2(self.vision_tower) else VISION_PREFIX

    @classmethod
    def from_folder(cls, folder: str | Path) -> HicoConfig:
        path = Path(folder) / "config.json"
        if not path.exists():
            raise CheckpointError(f"{folder}: no config.json; pass the folder of a VideoChat-Flash checkpoint")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc}); restore the file from the checkpoint") from exc
        return cls.from_official(raw, str(path))

    def qwen2_config(self) -> Qwen2Config:
        config = Qwen2Config(**self.llm)
        config._attn_implementation = "sdpa"
        return config


def _dropout(raw: dict, enabled: bool, source: str) -> DropSchedule:
    """The configured schedule (official defaults for missing keys). An inconsistent one is an error only
    when it is switched on; the official code then ignores the lists anyway."""
    try:
        schedule = DropSchedule(kind=raw.get("llm_compress_type", "attention"),
                                layers=tuple(raw.get("llm_compress_layer_list", (8, 16, 24))),
                                ratios=tuple(raw.get("llm_image_token_ratio_list", (1.0, 0.5, 0.25, 0.125))))
        schedule.check_depth(raw["num_hidden_layers"])
    except HicoError as exc:
        if enabled:
            raise CheckpointError(f"{source}: mm_llm_compress is on but {exc}") from exc
        return DropSchedule()
    return schedule


def is_internvideo2(tower: str) -> bool:
    return "internvideo2" in tower.lower()


def _vision_config(raw: dict, tower: str) -> UMTConfig | InternVideo2Config:
    hd = "umt-hd" in tower.lower()
    overrides = raw.get("vision_config") or {}
    select = int(raw.get("mm_vision_select_layer", -2))
    clip_frames = raw.get("mm_local_num_frames", FRAMES_PER_CLIP)
    if is_internvideo2(tower):
        return _internvideo2_config(overrides, select, clip_frames)
    blocks = overrides.get("num_hidden_layers", UMT_DEPTH + select + 1)
    image_size = overrides.get("image_size", 448 if hd else 224)
    return UMTConfig(hidden_size=overrides.get("hidden_size", 1024), num_layers=blocks,
                     num_heads=overrides.get("num_attention_heads", 16), patch_size=overrides.get("patch_size", 16),
                     image_size=image_size, num_frames=overrides.get("num_frames", clip_frames),
                     interpolate_positions=hd)


def _internvideo2_config(overrides: dict, select: int, frames: int) -> InternVideo2Config:
    """Released sizes, or a `vision_config` block named after the official tower's arguments (embed_dim,
    depth = blocks built, num_heads, patch_size, img_size, num_frames, mlp_hidden_dim, norm_eps)."""
    def value(official: str, hico_name: str, default):  # the UMT-style names of hico's tiny configs work too
        return overrides.get(official, overrides.get(hico_name, default))

    width = value("embed_dim", "hidden_size", 1408)
    return InternVideo2Config(hidden_size=width,
                              num_layers=value("depth", "num_hidden_layers", INTERNVIDEO2_DEPTH + select + 1),
                              num_heads=value("num_heads", "num_attention_heads", 16),
                              patch_size=overrides.get("patch_size", 14),
                              image_size=value("img_size", "image_size", 224),
                              num_frames=overrides.get("num_frames", frames),
                              mlp_hidden_size=value("mlp_hidden_dim", "mlp_hidden_size",
                                                    int(width * OFFICIAL_MLP_RATIO)),
                              norm_eps=overrides.get("norm_eps", 1e-6))


ROPE_KEYS = {"rope_theta", "rope_scaling", "rope_parameters"}  # transformers 5 folds the first two into the last


def _llm_kwargs(raw: dict) -> dict:
    """The Qwen2 part of an official config (multimodal keys left out). Copies: Qwen2Config writes rope_theta
    into the rope_scaling dict it is given, which would change the config.json a checkpoint save writes."""
    accepted = (set(inspect.signature(Qwen2Config.__init__).parameters) - {"self", "kwargs", "model_type",
                                                                          "architectures"}) | ROPE_KEYS
    return {k: copy.deepcopy(v) for k, v in raw.items() if k in accepted and not (k in ROPE_KEYS and v is None)}


def official_to_hico(key: str) -> str:
    """Map an official state-dict key to hico's module path (`vision.`, `projector.`, `llm.`); the tower's keys
    start with VISION_PREFIX (UMT) or INTERNVIDEO2_PREFIX."""
    for prefix, head in ((VISION_PREFIX, "vision."), (INTERNVIDEO2_PREFIX, "vision."),
                         (PROJECTOR_PREFIX, "projector.")):
        if key.startswith(prefix):
            return head + key[len(prefix):]
    return "llm." + key


def hico_to_official(key: str, vision_prefix: str = VISION_PREFIX) -> str:
    """The inverse of `official_to_hico`, for the tower whose prefix is `vision_prefix` (HicoConfig.vision_prefix)."""
    head, _, rest = key.partition(".")
    prefixes = {"vision": vision_prefix, "projector": PROJECTOR_PREFIX, "llm": ""}
    if head not in prefixes:
        raise KeyError(f"{key} is not a hico parameter name")
    return prefixes[head] + rest


def hub_cache() -> Path:
    """The Hub cache folder, from the environment at call time: HF_HUB_CACHE, else HF_HOME/hub, else the
    huggingface_hub default (~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_hub_id(name: str | Path) -> bool:
    """`owner/name` that is not an existing path: a Hub repo id."""
    return not Path(name).exists() and bool(HUB_ID.match(str(name)))


def resolve_checkpoint(name: str | Path, revision: str | None = None) -> Path:
    """The local folder of a checkpoint given as a folder or as a Hub repo id (downloaded into the Hub cache
    with a progress bar, or found there when HF_HUB_OFFLINE is set); `revision` is a branch, tag or commit."""
    if not is_hub_id(name):
        if revision is not None:
            raise CheckpointError(f"{name}: --revision applies to Hub ids (owner/name), not to a local folder")
        return Path(name)
    repo, cache, offline = str(name), hub_cache(), hub_offline()
    at = f" at revision {revision}" if revision else ""
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=offline,
                                      allow_patterns=HUB_FILES))
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"{repo}: the Hub repo has no revision {revision!r}; use a branch, tag or commit "
                              "of it") from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise CheckpointError(f"{repo}: no such folder, and no Hub model repo of that name that this account can "
                              "read (check the spelling, or log in with `hf auth login` for a gated one)") from exc
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise CheckpointError(f"{repo}{at} is not in the Hub cache {cache} and {why}; fetch it on a connected "
                              f"machine with `hf download {repo}{' --revision ' + revision if revision else ''}` "
                              "into the same cache (HF_HOME / HF_HUB_CACHE), or pass a checkpoint folder") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"{repo}{at}: download failed ({type(exc).__name__}: {exc}); retry, or fetch it with "
                              f"`hf download {repo}`") from exc


def weight_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index (no readable weight_map: {exc}); the file is "
                                  "damaged, download it again") from exc
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise CheckpointError(f"{folder}: shards listed in model.safetensors.index.json are missing: {missing}")
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    if (folder / "pytorch_model_fsdp_0").is_dir():  # hico.train.fsdp.SHARDS (not imported: no training here)
        raise CheckpointError(f"{folder}: a sharded FSDP training checkpoint; write it in the official layout "
                              f"with `hico export-checkpoint {folder} --out NEW_FOLDER` and load that")
    raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json; hico reads "
                          "safetensors weights (convert .bin files with transformers first)")


def read_safetensors(path: str | Path, keep=None) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file (those whose name `keep(name)` accepts, when given); a truncated or
    otherwise damaged file is a CheckpointError naming it (safetensors checks the header, and that the data
    covers every tensor, before reading)."""
    try:
        if keep is None:
            return load_file(str(path))
        with safe_open(str(path), "pt") as f:
            return {name: f.get_tensor(name) for name in f.keys() if keep(name)}
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: damaged weight file ({exc}); it is truncated or not a safetensors file: "
                              "download it again") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the weight file ({exc.strerror or exc})") from exc


def load_state_dict(folder: str | Path, vision_only: bool = False) -> dict[str, torch.Tensor]:
    """All weights of a checkpoint folder under hico's names (with `vision_only`, the tower's and projector's)."""
    keep = (lambda key: not official_to_hico(key).startswith("llm.")) if vision_only else None
    state = {}
    for path in weight_files(folder):
        for key, tensor in read_safetensors(path, keep).items():
            state[official_to_hico(key)] = tensor
    return state


def check_state_dict(expected: dict[str, torch.Size], found: dict[str, torch.Tensor], source: str,
                     optional: set[str] = frozenset(), vision_prefix: str = VISION_PREFIX) -> None:
    """Fail with one message listing every missing, unexpected and wrongly shaped tensor (official names)."""
    official = lambda k: hico_to_official(k, vision_prefix)  # noqa: E731
    missing = sorted(official(k) for k in expected if k not in found and k not in optional)
    unexpected = sorted(official(k) for k in found if k not in expected)
    shapes = sorted(f"{official(k)}: checkpoint {tuple(found[k].shape)}, model {tuple(expected[k])}"
                    for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k]))
    problems = []
    for title, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if names:
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            problems.append(f"{title}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not fit the config; " + "; ".join(problems))


def save_state_dict(state: dict[str, torch.Tensor], folder: str | Path, config: dict) -> None:
    """Write config.json and model.safetensors under the official key names (refuses to overwrite)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        if (folder / name).exists():
            raise CheckpointError(f"{folder / name} exists; hico does not overwrite checkpoints, choose a new folder")
    prefix = INTERNVIDEO2_PREFIX if is_internvideo2(str(config.get("mm_vision_tower", ""))) else VISION_PREFIX
    official = {hico_to_official(k, prefix): v.detach().contiguous() for k, v in state.items()}
    if config.get("tie_word_embeddings"):  # one tensor under two names: safetensors keeps the embedding only
        official.pop("lm_head.weight", None)
    # Weights first, config last: a folder with config.json has complete weights (each file lands whole).
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(official, str(tmp), metadata={"format": "pt"})
    write_text_atomic(folder / "config.json", json.dumps(config, indent=2))
