"""The recipe of the embedded default model (`hico.embedded`): a tiny HiCo model that hico trains itself on
synthetic videos; its output is the package data in `hico/embedded/weights/`.

    make tiny-model            # python -m hico.embedded --work build/tiny-model --out src/hico/embedded/weights

The recipe (`recipe()`) runs `hico train` stage by stage from a random checkpoint in the official layout (with
a BPE tokenizer trained on the synthetic prompts), each stage on data that `hico.synthetic.tasks` writes with its own
seed: one picture filling one clip of a 1 fps haystack, named ("a red circle") or asked about without options.
Haystacks are varied: pans over 19 training photos, each randomly flipped, turned and recoloured, drifting
blobs, and cuts between them.

0. `tower`: the tower alone learns to classify pictures (shape, colour) and to tell them from haystack clips
   (`pretrain_tower`, 400 steps), as released towers come pretrained; trained through the language loss alone
   it never learns shapes;
1. `align` (stage-1 preset; tower, projector and LLM: the toy LLM is not pre-trained): 8-frame videos;
2. `short` (stage-2 preset): 8-32-frame videos;
3. `long` (stage-3 preset; projector and LLM): 32-128-frame videos, the longest the model ever trains on.

The model is a toy: it names the colour and shape of `hico.synthetic.pictures` in synthetic videos (trained
on up to 128 frames; right up to 4,096 with the YaRN scaling `install` adds and its in-LLM dropout) and nothing
else (docs/tiny-model.md). `--scenes plain --tower-steps 0` is the earlier recipe (9 photos as they are, no tower
pretraining: colours only), kept for the ablations. Use a released VideoChat-Flash checkpoint (`--model FOLDER`)
for real videos.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hico.api import load_tokenizer
from hico.atomic import atomic_path, write_text_atomic
from hico.checkpoint import HicoConfig
from hico.clips import FRAMES_PER_CLIP
from hico.embedded import WEIGHTS
from hico.errors import HicoError
from hico.model import HicoModel
from hico.prompt import chat_prompt
from hico.synthetic.checkpoints import tiny_official_config, train_tokenizer, write_random_checkpoint
from hico.synthetic.pictures import COLOURS, SHAPES, draw_picture, random_spec
from hico.synthetic.tasks import (HAYSTACKS, KINDS, VARIED_PHOTOS, TaskOptions, haystack_frames, plan_task,
                                  write_task_set)
from hico.train.engine import load_weights, save_checkpoint
from hico.train.run import train
from hico.train.stages import load_stage
from hico.video.preprocess import image_clip, preprocess

ATTRIBUTES = ("colour", "shape")  # what the toy model is trained to read from pictures
VOCAB = 512
SIZE = 64  # frame side of the synthetic videos and of the tower's input
ALIGN, SHORT, LONG = 5000, 5000, 2500  # samples per stage
SCENES = ("varied", "plain")  # training haystacks (`--scenes`; `recipe(varied=...)`)
TOWER_STEPS = 400  # steps of 32 pictures (+ 16 haystack clips) that teach the tower shapes (`--tower-steps`)
# Added to the installed config.json only (inference): YaRN over the 2,112 tokens of the longest training video,
# stretched 32x (65,600 tokens = 4,096 frames). Without it the model loses the picture beyond about 512 frames.
LONG_CONTEXT = {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 2112}


def toy_config(projector: str = "tome16_mlp_hd64") -> dict:
    """config.json of the toy model: UMT-style tower 2 x 96 at 64 px (8 px patches), Qwen2-style LLM 4 x 128.

    `projector` "avgpool16_mlp" swaps clip-level merging for plain average pooling (the ablation baseline)."""
    config = tiny_official_config(vocab_size=VOCAB, hidden_size=128, layers=4, heads=4, kv_heads=2, vision_width=96,
                                  vision_layers=2, vision_heads=4, image_size=SIZE, patch_size=8)
    # rope_theta 1e12: RoPE frequency pairs either turn fully within the 2k-token training videos or hardly turn
    # at all up to 65k tokens (4,096 frames), so fewer of them meet unseen angles on long videos than with 1e6.
    # In-LLM dropout on for inference (training runs without it): half the visual tokens evenly after layer 1,
    # then the 3% the prompt attends to most after layer 2, so the last layer sees no more visual tokens at 4,096
    # frames (65,600 -> 1,968) than at the 128 frames of the longest training video.
    config.update({"intermediate_size": 384, "rope_theta": 1e12, "max_position_embeddings": 131072,
                   "mm_llm_compress": True, "llm_compress_type": "uniform0_attention",
                   "llm_compress_layer_list": [1, 2], "llm_image_token_ratio_list": [1.0, 0.5, 0.03],
                   "mm_projector_type": projector})
    return config


@dataclass(frozen=True)
class Step:
    """One `hico train` run of the recipe: its data and its training settings (a stage preset + overrides)."""

    name: str
    stage: int
    data: TaskOptions
    overrides: dict = field(default_factory=dict)


def recipe(scale: float = 1.0, varied: bool = True) -> tuple[Step, ...]:
    """The stages; `scale` multiplies the sample counts (tests run the recipe at a small scale). `varied` draws
    haystacks from `VARIED_PHOTOS`, randomly recoloured, and cut into shots as well."""
    def count(n: int) -> int:
        return max(8, int(n * scale))

    common = {"lr": 1e-3, "vision_lr": None, "grad_accum": 1, "batch_size": 8, "warmup_ratio": 0.05,
              "weight_decay": 0.0, "gradient_checkpointing": False, "isolate_decode": False, "time_message": 0.5,
              "logging_steps": 25, "save_steps": 100000, "max_length": 4096, "min_frames": 8,
              "policy": "dynamic_fps1", "template": "qwen_2",
              "labels": "answers"}  # how the shipped weights were trained (before the official rule became the default)
    data = {"size": SIZE, "attributes": ATTRIBUTES, "kinds": ("caption",)}
    if varied:
        data.update(photos=VARIED_PHOTOS, augment=True, haystacks=HAYSTACKS)
    return (
        Step("align", 1, TaskOptions(videos=count(ALIGN), min_frames=8, max_frames=8, seed=1, **data),
             dict(common, train=["vision", "projector", "llm"], max_frames=8)),
        Step("short", 2, TaskOptions(videos=count(SHORT), min_frames=8, max_frames=32, seed=2, **data),
             dict(common, train=["vision", "projector", "llm"], max_frames=32)),
        Step("long", 3, TaskOptions(videos=count(LONG), min_frames=32, max_frames=128, seed=3, **data),
             dict(common, train=["projector", "llm"], lr=5e-4, max_frames=128)),
    )


def corpus(count: int = 4000, seed: int = 0) -> list[str]:
    """Texts the tokenizer is trained on: prompts and answers of every synthetic task kind, chat framing."""
    rng = random.Random(seed)
    options = TaskOptions(kinds=KINDS)
    texts = []
    for _ in range(count):
        task = plan_task(rng, options)
        seconds = rng.randint(8, 4096)
        message = f"The video lasts for {seconds:.2f} seconds, and {rng.randint(8, 512)} frames are uniformly " \
                  "sampled from it. These frames are located at 0.0s,1.0s."
        texts.append(chat_prompt(task.question, message).replace("<image>", "") + task.answer + "<|im_end|>")
    return texts


def initial_checkpoint(folder: Path, seed: int = 0, projector: str = "tome16_mlp_hd64") -> Path:
    """A random toy model in the official layout with a BPE tokenizer trained on the synthetic corpus."""
    write_random_checkpoint(folder, toy_config(projector), seed, tokenizer=False)
    train_tokenizer(folder, VOCAB, corpus())
    return folder


def pretrain_tower(source: Path, output: Path, steps: int, batch: int = 32, seed: int = 0,
                   progress: bool = True, photos: tuple[str, ...] = ()) -> list[float]:
    """Train `source`'s tower alone as a picture classifier and save the checkpoint to `output`.

    Random `hico.synthetic.pictures` as still clips go through the tower and the model's clip compression;
    the mean of the 64 tokens feeds a linear shape head and a linear colour head (cross-entropy, discarded
    afterwards). With `photos`, every step also shows batch/2 haystack clips (motion, or recoloured pans over
    `photos`) and a third head tells pictures from haystack. The language stages alone do not teach this tower
    shapes; a pretrained tower, as released towers are, does. Returns the loss of every step.
    """
    model = HicoModel(HicoConfig.from_folder(source))
    load_weights(model, source)
    model.reset_buffers()
    model.eval()
    model.vision.train()
    torch.manual_seed(seed)
    colours = tuple(COLOURS)
    head = torch.nn.Linear(model.config.mm_hidden_size, len(SHAPES) + len(colours) + (2 if photos else 0))
    optimizer = torch.optim.AdamW([*model.vision.parameters(), *head.parameters()], lr=1e-3)
    rng, losses = random.Random(seed), []
    scenes = ("motion", *(f"photo:{name}" for name in photos))
    hay = batch // 2 if photos else 0
    for step in range(1, steps + 1):
        specs = [random_spec(rng) for _ in range(batch)]
        clips = [image_clip(np.asarray(draw_picture(spec, SIZE)), SIZE) for spec in specs]
        clips += [preprocess(haystack_frames(rng.choice(scenes), FRAMES_PER_CLIP, SIZE, rng, augment=True), SIZE)
                  for _ in range(hay)]
        clips = torch.stack(clips)
        tokens = model.compress_clips(model.vision(clips), clips.shape[1])
        logits = head(tokens.mean(dim=1))
        shapes = torch.tensor([SHAPES.index(spec.shape) for spec in specs])
        hues = torch.tensor([colours.index(spec.colour) for spec in specs])
        loss = torch.nn.functional.cross_entropy(logits[:batch, :len(SHAPES)], shapes) + \
            torch.nn.functional.cross_entropy(logits[:batch, len(SHAPES):len(SHAPES) + len(colours)], hues)
        if hay:
            picture = torch.tensor([1] * batch + [0] * hay)
            loss = loss + torch.nn.functional.cross_entropy(logits[:, -2:], picture)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress and (step % 50 == 0 or step == steps):
            print(f"[tower] step {step}/{steps}  loss {loss.item():.3f}", flush=True)
    model.eval()
    official = json.loads((source / "config.json").read_text())
    save_checkpoint(model, output, official, load_tokenizer(source))
    return losses


def claim_work_folder(work: Path, settings: dict) -> None:
    """Make `work` the folder of a run with `settings`, refusing one that holds the stages of other settings
    (resuming from them would mix two recipes)."""
    stamp = work / "recipe.json"
    if stamp.exists():
        recorded = json.loads(stamp.read_text())
        if recorded != settings:
            raise HicoError(f"{work} holds a run with other settings ({recorded}, now {settings}); pass another "
                            "--work folder or delete this one")
        return
    if work.exists() and any(work.iterdir()):
        raise HicoError(f"{work} is not empty and has no recipe.json, so it cannot be resumed safely; pass another "
                        "--work folder or delete this one")
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings))


def make(out: str | Path, work: str | Path, scale: float = 1.0, progress: bool = True,
         projector: str = "tome16_mlp_hd64", tower_steps: int = TOWER_STEPS, varied: bool = True) -> Path:
    """Run the whole recipe in `work` (resumable: finished stages are kept) and copy the result to `out`.

    `tower_steps` > 0 pretrains the tower as a picture classifier first (step `00-tower`); `varied` trains on
    varied scenes (`recipe`), and the tower also on telling pictures from haystack."""
    work = Path(work)
    claim_work_folder(work, {"scale": scale, "projector": projector, "tower_steps": tower_steps, "varied": varied})
    previous = work / "00-init"
    if not (previous / "model.safetensors").exists():
        shutil.rmtree(previous, ignore_errors=True)
        initial_checkpoint(previous, projector=projector)
    if tower_steps:
        tower = work / "00-tower"
        if not (tower / "model.safetensors").exists():
            shutil.rmtree(tower, ignore_errors=True)
            print(f"[tower] pretraining the tower as a picture classifier, {tower_steps} steps", flush=True)
            pretrain_tower(previous, tower, tower_steps, progress=progress, photos=VARIED_PHOTOS if varied else ())
        previous = tower
    started = time.monotonic()
    for number, step in enumerate(recipe(scale, varied), 1):
        data, output = work / f"data-{step.name}", work / f"{number:02d}-{step.name}"
        if not (data / "data.json").exists():
            shutil.rmtree(data, ignore_errors=True)
            print(f"[{step.name}] writing {step.data.videos} samples", flush=True)
            write_task_set(data, step.data, progress)
        if not (output / "model.safetensors").exists():
            shutil.rmtree(output, ignore_errors=True)
            print(f"[{step.name}] training (stage {step.stage} preset)", flush=True)
            train(previous, data / "data.json", output, load_stage(step.stage, step.overrides), progress=progress)
        print(f"[{step.name}] done, {(time.monotonic() - started) / 60:.1f} min so far", flush=True)
        previous = output
    return install(previous, out)


def install(checkpoint: Path, out: str | Path) -> Path:
    """Copy a trained checkpoint's files to `out`: weights in float16 (a small package), config.json with the
    long-context RoPE scaling (`LONG_CONTEXT`) that inference on long videos needs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = load_file(str(checkpoint / "model.safetensors"))
    with atomic_path(out / "model.safetensors") as tmp:  # an interrupted install leaves no half-written model
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()},
                  str(tmp), metadata={"format": "pt"})
    config = json.loads((checkpoint / "config.json").read_text())
    stretched = int(LONG_CONTEXT["factor"] * LONG_CONTEXT["original_max_position_embeddings"])
    config.update(rope_scaling=LONG_CONTEXT, max_position_embeddings=stretched)  # consistent, so no warning
    write_text_atomic(out / "config.json", json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(checkpoint / name, out / name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hico.embedded", description="train the embedded toy model")
    parser.add_argument("--work", default="build/tiny-model", help="working folder (data, stage checkpoints)")
    parser.add_argument("--out", default=str(WEIGHTS), help="where the finished model's files go")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sample counts (smoke runs)")
    parser.add_argument("--projector", choices=("tome16_mlp_hd64", "avgpool16_mlp"), default="tome16_mlp_hd64",
                        help="avgpool16_mlp: average pooling instead of clip-level merging (the ablation baseline)")
    parser.add_argument("--tower-steps", type=int, default=TOWER_STEPS,
                        help="pretrain the tower as a picture classifier for this many steps of 32 pictures first "
                             "(0: no pretraining; the model then cannot read shapes)")
    parser.add_argument("--scenes", choices=SCENES, default="varied",
                        help="training haystacks: varied (19 photos, randomly recoloured, cut into shots) or plain "
                             "(9 photos as they are; the model then overfits them when its tower is pretrained)")
    args = parser.parse_args(argv)
    if args.tower_steps < 0:
        parser.error("--tower-steps must be >= 0")
    try:
        out = make(args.out, args.work, args.scale, projector=args.projector, tower_steps=args.tower_steps,
                   varied=args.scenes == "varied")
        print(f"wrote {out}")
    except HicoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

