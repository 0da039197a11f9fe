"""Training settings: the four official stages as preset files, plus the engine's knobs, overridable.

    config = load_stage(3, {"lr": 2e-5, "max_frames": 128})

Stage presets live in `hico/train/presets/stage{1..4}.yaml` (what is trained, frame bounds, learning rates
with a separate tower rate, max length, template). The other fields are common defaults (the official
scripts: cosine schedule, warm-up 3%, no weight decay, one epoch, gradient checkpointing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from hico.dropout import DropSchedule
from hico.errors import OptionError

PRESETS = Path(__file__).resolve().parent / "presets"
PARTS = ("vision", "projector", "llm")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05  # LoRA dropout probability (PEFT's lora_dropout), not the in-LLM token dropout
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # LLM attention projections
    tower: bool = False  # also adapt the vision tower's attention (qkv, proj)


@dataclass(frozen=True)
class TrainConfig:
    stage: int
    train: tuple[str, ...]  # parts trained: vision, projector, llm
    policy: str  # frame sampling policy (official): middle or dynamic_fps1
    min_frames: int
    max_frames: int
    lr: float
    vision_lr: float | None  # None: the tower uses `lr`
    max_length: int  # tokens, visual tokens included; longer samples are skipped and counted
    template: str  # plain or qwen_2
    labels: str = "official"  # qwen_2 labels: official (preprocess_qwen's rule) or answers (answer text only)
    batch_size: int = 1  # per device
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    gradient_checkpointing: bool = True
    high_res: bool = False  # switch the tower to 448 input (stage 4)
    # In-LLM visual-token dropout while training, any setting `DropSchedule.parse` reads: off (the official
    # training), model (the checkpoint's llm_compress_* schedule), default (its inference setting), a type
    # mapping {type: uniform, layers: [1], ratios: [1, 0.5]}; true/false as model/off. Stored parsed.
    dropout: DropSchedule | str = DropSchedule()
    lora: LoraSettings | None = None
    max_skip_share: float = 0.05  # unreadable samples above this share stop the run
    save_steps: int = 500
    save_total_limit: int | None = 3
    logging_steps: int = 10
    seed: int = 0
    workers: int = 0  # DataLoader worker processes
    isolate_decode: bool = True  # decode videos in a hang-safe worker process; false for trusted local files
    time_message: float = 1.0  # share of video samples whose prompt carries the time message (official: all)
    deepspeed: str | None = None  # a DeepSpeed JSON config (configs/deepspeed/zero1.json is the official one)
    fsdp: str = ""  # FSDP mode for Trainer, e.g. "full_shard auto_wrap"
    fsdp_config: str | None = None  # e.g. configs/fsdp.json (wraps Qwen2 decoder layers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dropout", DropSchedule.parse(self.dropout))
        if not self.train or set(self.train) - set(PARTS):
            raise OptionError(f"train lists parts among {PARTS}, got {list(self.train)}")
        if self.policy not in ("middle", "dynamic_fps1"):
            raise OptionError(f"policy must be middle or dynamic_fps1, got {self.policy!r}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise OptionError(f"need 1 <= min_frames <= max_frames, got {self.min_frames} and {self.max_frames}")
        if self.template not in ("plain", "qwen_2"):
            raise OptionError(f"template must be plain or qwen_2, got {self.template!r}")
        if self.labels not in ("official", "answers"):
            raise OptionError(f"labels must be official or answers, got {self.labels!r}")
        for name in ("lr", "batch_size", "grad_accum", "max_length", "epochs"):
            if not getattr(self, name) > 0:
                raise OptionError(f"{name} must be positive, got {getattr(self, name)}")
        if self.vision_lr is not None and not self.vision_lr > 0:
            raise OptionError(f"vision_lr must be positive, got {self.vision_lr}")
        if not 0 <= self.time_message <= 1:
            raise OptionError(f"time_message is a share in [0, 1], got {self.time_message}")
        if not 0 <= self.max_skip_share <= 1:
            raise OptionError(f"max_skip_share is a fraction in [0, 1], got {self.max_skip_share}")
        if self.lora is not None and "llm" not in self.train and not self.lora.tower:
            raise OptionError("LoRA adapts the LLM: add llm to train (or set lora.tower for the tower only)")


def load_stage(stage: int | str | Path, overrides: dict | None = None) -> TrainConfig:
    """A stage preset (1-4, or a YAML file of the same fields) with `overrides` applied."""
    path = PRESETS / f"stage{stage}.yaml" if str(stage) in ("1", "2", "3", "4") else Path(str(stage))
    if not path.is_file():
        raise OptionError(f"unknown stage {stage!r}: use 1, 2, 3, 4 or a YAML file of training settings")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise OptionError(f"{path}: not valid YAML ({exc})") from exc
    values.update(overrides or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise OptionError(f"unknown training settings {unknown}; known: {', '.join(sorted(known))}")
    values = {k: _number(v) for k, v in values.items()}
    values["train"] = tuple(values.get("train", ()))
    lora = values.get("lora")
    if lora is not None and not isinstance(lora, LoraSettings):
        lora = {} if lora is True else lora
        if not isinstance(lora, dict):
            raise OptionError(f"lora must be true or a mapping of {[f.name for f in dataclasses.fields(LoraSettings)]}")
        try:
            values["lora"] = LoraSettings(**{k: tuple(v) if k == "targets" else v for k, v in lora.items()})
        except TypeError as exc:
            raise OptionError(f"bad lora settings: {exc}") from exc
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise OptionError(f"{path}: {exc}") from exc


def parse_overrides(items: list[str]) -> dict:
    """`key=value` strings (values read as YAML: 1e-4, true, [a, b]) -> a dict; `lora.rank=8` nests."""
    result: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise OptionError(f"--set takes key=value, got {item!r}")
        value = _number(yaml.safe_load(raw)) if raw else None
        if "." in key:
            head, sub = key.split(".", 1)
            nested = result.setdefault(head, {})
            if not isinstance(nested, dict):
                raise OptionError(f"--set {head} and --set {key} conflict")
            nested[sub] = value
        else:
            result[key] = value
    return result


def _number(value):
    """YAML 1.1 reads '2e-5' as a string; take it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def high_res_config(official: dict) -> dict:
    """The config.json of the stage-4 model: the tower reads 448 input (position table interpolated)."""
    config = dict(official, mm_vision_tower="umt-hd-large")
    if isinstance(config.get("vision_config"), dict) and "image_size" in config["vision_config"]:
        config["vision_config"] = dict(config["vision_config"], image_size=2 * config["vision_config"]["image_size"])
    return config


