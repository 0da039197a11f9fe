"""Seeded synthetic video QA for training and testing small HiCo models (no dataset can be downloaded here).

A video is a haystack at 1 fps, procedural motion (soft blobs drifting over a gradient) or a slow pan across a
natural photograph (the sample images that scikit-image ships), with events: a needle picture
(`hico.synthetic.pictures.draw_picture`: a coloured shape with a digit or letter on a patterned background)
filling one whole 4-frame clip. Questions, 4 options each, answered with the option letter:

- `needle`: one event; "Find the frame of <caption>. <question about the attribute the caption leaves out>"
  (the NIAH single-hop format, so training and `hico niah` ask alike);
- `attribute`: the same question with 1-2 other events present, so the caption must be matched;
- `count`: "How many times does a <shape> appear in the video?" (1-4 events of that shape among others);
- `order`: "Which shape appears first?" (two events of different shapes);
- `caption`: open questions about one picture, answered in words: "Describe the picture in the video." ("a red
  circle"), or a needle question without options ("Find the frame of ... What colour is the shape?": "red");
- `reading`: text only, the picture described in words before a needle question (teaches the option format).

Half the prompts put the question right after the video, as the NIAH prompt does, half after a newline.

`write_task_set` writes the videos and a LLaVA-style `data.json` that `hico train` reads. Photos are split:
`TRAIN_PHOTOS` (or the longer `VARIED_PHOTOS`) for training sets, `HELDOUT_PHOTOS` for evaluation haystacks.
`augment` gives every photo pan random flips, turns, channel order, tint and contrast, and the `shots` haystack
cuts a video into shots of motion and photo pans, as evaluation haystacks are: both make a few photos look like
many scenes, so a model cannot learn "anything unlike the training photos is the picture".
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from hico.atomic import write_text_atomic
from hico.clips import FRAMES_PER_CLIP as CLIP  # a needle picture fills one whole clip
from hico.errors import OptionError
from hico.synthetic.pictures import (ANSWER_TAIL, ATTRIBUTES, DOMAINS, QUESTIONS, SHAPES, PictureSpec, article,
                                     draw_picture, options_block, random_spec)
from hico.synthetic.videos import write_video

KINDS = ("needle", "attribute", "count", "order", "caption", "reading")
VIDEO_KINDS = KINDS[:4]
CAPTION_QUESTION = "Describe the picture in the video."
HAYSTACKS = ("motion", "photo", "shots")
TRAIN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "retina",
                "brick", "grass")
VARIED_PHOTOS = TRAIN_PHOTOS + ("cell", "chessboard_RGB", "clock_motion", "coins", "horse", "microaneurysms",
                                "motorcycle_right", "page", "phantom", "text")
HELDOUT_PHOTOS = ("ihc", "gravel", "logo", "color", "camera", "moon")
TRAIN_SHOT = (8, 64)  # shot lengths of `shots` training haystacks, in frames


@dataclass(frozen=True)
class TaskOptions:
    videos: int = 100
    min_frames: int = 16  # frames per video (1 fps), multiples of 4
    max_frames: int = 128
    size: int = 64  # frame side in pixels
    kinds: tuple[str, ...] = VIDEO_KINDS
    haystacks: tuple[str, ...] = ("motion", "photo")
    photos: tuple[str, ...] = TRAIN_PHOTOS
    attributes: tuple[str, ...] = ATTRIBUTES  # what needle/attribute questions may ask about
    augment: bool = False  # random flips, turns, channel order, tint and contrast of every photo pan
    seed: int = 0

    def __post_init__(self) -> None:
        if self.videos < 1:
            raise OptionError(f"videos must be at least 1, got {self.videos}")
        if not CLIP * 2 <= self.min_frames <= self.max_frames or self.min_frames % CLIP or self.max_frames % CLIP:
            raise OptionError(f"frame bounds must be multiples of {CLIP}, at least {2 * CLIP}, min <= max; got "
                              f"{self.min_frames} and {self.max_frames}")
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise OptionError(f"kinds are among {KINDS}, got {list(self.kinds)}")
        if not self.haystacks or set(self.haystacks) - set(HAYSTACKS):
            raise OptionError(f"haystacks are among {HAYSTACKS}, got {list(self.haystacks)}")
        if not self.attributes or set(self.attributes) - set(ATTRIBUTES):
            raise OptionError(f"attributes are among {ATTRIBUTES}, got {list(self.attributes)}")
        if not self.photos:
            raise OptionError("photos must name at least one scikit-image sample photo")
        if self.size < 32:
            raise OptionError(f"frame size must be at least 32 pixels, got {self.size}")


@dataclass(frozen=True)
class Event:
    clip: int  # the event fills frames 4*clip .. 4*clip+3
    spec: PictureSpec


@dataclass(frozen=True)
class VideoTask:
    frames: int
    haystack: str  # "motion", "photo:<name>" or "shots"
    events: tuple[Event, ...]
    question: str
    answer: str  # option letter
    kind: str


def photo_path(name: str) -> Path:
    """A sample photograph shipped inside scikit-image (read as a file; scikit-image is not imported)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise OptionError("photo haystacks need scikit-image (pip install scikit-image); or use haystacks=motion")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    for suffix in (".png", ".jpg"):
        if (folder / f"{name}{suffix}").exists():
            return folder / f"{name}{suffix}"
    raise OptionError(f"scikit-image ships no sample photo named {name!r} in {folder}")


def haystack_frames(kind: str, frames: int, size: int, rng: random.Random, augment: bool = False) -> np.ndarray:
    """(frames, size, size, 3) uint8: drifting blobs, or a slow pan/zoom across a photo (`augment`: the pan
    randomly flipped, turned and recoloured)."""
    if kind == "motion":
        return _motion(frames, size, np.random.default_rng(rng.getrandbits(32)))
    photo = _photo(kind.removeprefix("photo:"))
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.45, 0.8))
    start = np.array([rng.uniform(0, height - side), rng.uniform(0, width - side)])
    stop = np.array([rng.uniform(0, height - side), rng.uniform(0, width - side)])
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        top, left = (start + (stop - start) * i / max(frames - 1, 1)).astype(int)
        crop = photo[top:top + side, left:left + side]
        out[i] = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))
    return augment_photo(out, np.random.default_rng(rng.getrandbits(32))) if augment else out


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    with Image.open(photo_path(name)) as image:
        photo = np.asarray(image.convert("RGB"))
    photo.flags.writeable = False
    return photo


def augment_photo(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(..., H, W, 3) uint8 pixels (a photo, or the frames of a pan) flipped, turned, with their channels
    reordered, tinted and their contrast changed, or in grey; the same change for every frame."""
    pixels = np.rot90(pixels, rng.integers(4), axes=(-3, -2))
    pixels = pixels[..., ::-1, :] if rng.random() < 0.5 else pixels
    pixels = pixels[..., rng.permutation(3)].astype(np.float32)
    if rng.random() < 0.15:
        pixels = pixels.mean(-1, keepdims=True).repeat(3, -1)
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.6, 1.4) + mean * rng.uniform(0.7, 1.3)
    pixels = pixels * rng.uniform(0.7, 1.3, 3) + rng.uniform(-30, 30, 3)
    if rng.random() < 0.2:
        pixels = 255 - pixels
    return np.ascontiguousarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _motion(frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1).astype(np.float32)
    base = rng.uniform(40, 200, (2, 3)).astype(np.float32)
    ramp = (grid[..., :1] / size) * base[0] + (1 - grid[..., :1] / size) * base[1]
    blobs = rng.integers(2, 5)
    position = rng.uniform(0, size, (blobs, 2))
    velocity = rng.normal(0, size / 40, (blobs, 2))
    colours = rng.uniform(0, 255, (blobs, 3)).astype(np.float32)
    radius = rng.uniform(size / 10, size / 4, blobs)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        frame = ramp.copy()
        for b in range(blobs):
            centre = (position[b] + velocity[b] * i) % size
            weight = np.exp(-((grid - centre) ** 2).sum(-1) / (2 * radius[b] ** 2))[..., None]
            frame = frame * (1 - weight) + colours[b] * weight
        out[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def plan_task(rng: random.Random, options: TaskOptions) -> VideoTask:
    frames = rng.randrange(options.min_frames, options.max_frames + 1, CLIP)
    kind = rng.choice(options.kinds)
    haystack = rng.choice(options.haystacks)
    haystack = f"photo:{rng.choice(options.photos)}" if haystack == "photo" else haystack
    clips = frames // CLIP
    if kind in ("needle", "attribute"):
        asked = rng.choice(options.attributes)
        specs = _distinct_specs(rng, 1 if kind == "needle" else rng.randint(2, min(3, clips)), asked)
        target = specs[0]
        question, answer = _mcq(rng, f"Find the frame of {target.caption(asked)}. {QUESTIONS[asked]}",
                                target.value(asked), DOMAINS[asked])
    elif kind == "caption":
        specs = [_spec(rng)]
        question, answer = rng.choice(tuple(_open_questions(specs[0], options.attributes).items()))
    elif kind == "reading":
        asked, spec = rng.choice(options.attributes), _spec(rng)
        stem = (f"The picture shows {article(spec.colour)} {spec.colour} {spec.shape} with the symbol {spec.symbol}. "
                f"Find the frame of {spec.caption(asked)}. {QUESTIONS[asked]}")
        question, answer = _mcq(rng, stem, spec.value(asked), DOMAINS[asked])
        return VideoTask(0, "", (), question, answer, kind)
    elif kind == "count":
        shape = rng.choice(SHAPES)
        count = rng.randint(1, min(4, clips))
        others = rng.randint(0, min(2, clips - count))
        specs = [_spec(rng, shape=shape) for _ in range(count)]
        specs += [_spec(rng, shape=rng.choice([s for s in SHAPES if s != shape])) for _ in range(others)]
        rng.shuffle(specs)
        question, answer = _mcq(rng, f"How many times does {article(shape)} {shape} appear in the video?", str(count),
                                ("1", "2", "3", "4"))
    else:
        first, second = rng.sample(SHAPES, 2)
        specs = [_spec(rng, shape=first), _spec(rng, shape=second)]
        question, answer = _mcq(rng, "Which shape appears first?", first, SHAPES, must=(second,))
    places = sorted(rng.sample(range(clips), len(specs)))
    events = tuple(Event(clip, spec) for clip, spec in zip(places, specs))
    return VideoTask(frames, haystack, events, question, answer, kind)


def _open_questions(spec: PictureSpec, attributes: tuple[str, ...]) -> dict[str, str]:
    """Open-ended questions about one picture and their answers: a caption, and for each attribute the needle
    question without its options (as `hico niah run --answer open` asks it)."""
    asked = {CAPTION_QUESTION: f"{article(spec.colour)} {spec.colour} {spec.shape}"}
    asked.update({f"Find the frame of {spec.caption(name)}. {QUESTIONS[name]}": spec.value(name)
                  for name in attributes})
    return asked


def _spec(rng: random.Random, **fixed: str) -> PictureSpec:
    return dataclasses.replace(random_spec(rng), **fixed)


def _distinct_specs(rng: random.Random, count: int, asked: str) -> list[PictureSpec]:
    """Pictures whose captions (leaving out `asked`) each describe only their own picture."""
    specs: list[PictureSpec] = []
    while len(specs) < count:
        spec = _spec(rng)
        if not any(spec.fits(other, asked) or other.fits(spec, asked) or spec.value(asked) == other.value(asked)
                   for other in specs):
            specs.append(spec)
    return specs


def _mcq(rng: random.Random, stem: str, right: str, domain: tuple[str, ...],
         must: tuple[str, ...] = ()) -> tuple[str, str]:
    """The question with 4 shuffled options (`right`, every value in `must`, the rest drawn from `domain`)."""
    wrong = [*must, *rng.sample([v for v in domain if v != right and v not in must], 3 - len(must))]
    block, letter = options_block(rng, right, wrong)
    return f"{stem}\n{block}{ANSWER_TAIL}", letter


def render(task: VideoTask, size: int, rng: random.Random, photos: tuple[str, ...] = TRAIN_PHOTOS,
           augment: bool = False) -> np.ndarray:
    """The task's frames: the haystack (`shots` of motion and pans over `photos`) with each event's picture over
    its whole clip."""
    if task.haystack == "shots":
        frames = shot_haystack(task.frames, size, rng, photos, TRAIN_SHOT, augment)
    else:
        frames = haystack_frames(task.haystack, task.frames, size, rng, augment)
    for event in task.events:
        frames[event.clip * CLIP:(event.clip + 1) * CLIP] = np.asarray(draw_picture(event.spec, size))
    return frames


def shot_haystack(frames: int, size: int, rng: random.Random, photos: tuple[str, ...] = HELDOUT_PHOTOS,
                  shot: tuple[int, int] = (32, 128), augment: bool = False) -> np.ndarray:
    """(frames, size, size, 3) uint8: a haystack cut into shots of `shot` frames, each motion or a photo pan."""
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    start = 0
    while start < frames:
        length = min(rng.randint(*shot), frames - start)
        kind = rng.choice(("motion", *(f"photo:{name}" for name in photos)))
        out[start:start + length] = haystack_frames(kind, length, size, rng, augment)
        start += length
    return out


def write_haystack(path: str | Path, frames: int, size: int = 64, seed: int = 0,
                   photos: tuple[str, ...] = HELDOUT_PHOTOS, progress: bool = True) -> Path:
    """A 1 fps haystack video for `hico niah build`: shots of procedural motion and photo pans (held-out photos
    by default, so a model trained on `TRAIN_PHOTOS` is tested on scenes it never saw)."""
    path = Path(path)
    if path.exists():
        raise OptionError(f"{path} exists; choose a new file name (nothing was written)")
    if frames < CLIP:
        raise OptionError(f"a haystack needs at least {CLIP} frames, got {frames}")
    pixels = shot_haystack(frames, size, random.Random(seed), photos)
    return write_video(path, frames, fps=1.0, width=size, height=size, gop=CLIP * 4,
                       frame_fn=lambda k: pixels[k], progress=progress)


def write_demo_video(path: str | Path, frames: int = 64, size: int = 64, seed: int = 0) -> tuple[PictureSpec, int]:
    """A 1 fps video over held-out photos and motion with one picture filling one clip; returns what the picture
    shows and its first frame (the embedded model's demo)."""
    rng = random.Random(seed)
    pixels = shot_haystack(frames, size, rng, HELDOUT_PHOTOS, shot=(16, 32))
    spec, first = random_spec(rng), rng.randrange(frames // CLIP) * CLIP
    pixels[first:first + CLIP] = np.asarray(draw_picture(spec, size))
    write_video(path, frames, fps=1.0, width=size, height=size, gop=CLIP * 4, frame_fn=lambda k: pixels[k])
    return spec, first


def write_task_set(out: str | Path, options: TaskOptions = TaskOptions(), progress: bool = True) -> Path:
    """Write `out/videos/*.mp4` and `out/data.json`; refuses a folder that already holds a data.json."""
    out = Path(out)
    if (out / "data.json").exists():
        raise OptionError(f"{out / 'data.json'} exists; choose a new folder (nothing was written)")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    records = []
    for i in tqdm(range(options.videos), desc="samples written", unit="sample", disable=not progress):
        task = plan_task(rng, options)
        record: dict = {"id": i, "kind": task.kind}
        placeholder = ""
        if task.frames:
            frames = render(task, options.size, rng, options.photos, options.augment)
            record["video"] = f"videos/{i:05d}.mp4"
            write_video(out / record["video"], task.frames, fps=1.0, width=options.size, height=options.size,
                        gop=CLIP * 4, frame_fn=lambda k, frames=frames: frames[k])
            record["haystack"] = task.haystack
            record["events"] = [{"frame": e.clip * CLIP, "picture": e.spec.caption("symbol") + f", {e.spec.symbol}"}
                                for e in task.events]
            placeholder = "<image>\n" if i % 2 == 0 else "<image>"  # odd ids: the NIAH prompt's form
        record["conversations"] = [{"from": "human", "value": f"{placeholder}{task.question}"},
                                   {"from": "gpt", "value": task.answer}]
        records.append(record)
    write_text_atomic(out / "data.json", json.dumps(records, indent=1))  # its presence marks the set as complete
    return out / "data.json"
