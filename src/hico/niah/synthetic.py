"""An offline, seeded, procedural needle set for needle-in-a-video-haystack (NIAH) checks.

The records use the same formats as the VideoChat-Flash NIAH annotation files, so a runner written for those
files reads these unchanged:

* single hop: ``{"question", "answer", "image": "single/<name>.png", "id"}``;
* multi hop: ``{"images": [...], "question1", "answer1", "question2", "answer2"}``, a chain of pictures where
  picture k (``multi/niah_<id>_<k>_<name>.png``) carries the drawn instruction "Find the frame of <caption of
  picture k+1>" and the chain ends in one plain picture ``multi/<name>.png``.

Every picture is a shape of one colour with a large symbol inside, on a patterned background. Its caption names
two of colour / shape / symbol plus the background, and the question asks about the third, so reading the caption
never answers the question. No caption in a set describes any other picture of the set, so "Find the frame of
<caption>" always points at exactly one picture. Everything is drawn from `random.Random(seed)`: the same options
give byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hico.atomic import write_text_atomic
from hico.errors import OptionError
from hico.synthetic.pictures import (ANSWER_TAIL, ATTRIBUTES, DOMAINS, MIN_SIZE, QUESTIONS, PictureSpec, draw_picture,
                                     options_block, random_spec)

SINGLE_JSON = "niah-synthetic-singlehop.json"
MULTI_JSON = "niah-synthetic-multihop.json"
MAX_TRIES = 2000

MULTI_PREFIX = "Find the frame of {caption}. Locate the final frame based on the instructions in the image, and "
MULTI_CAPTION_TAIL = "choose the captions that best describe the frame: \n"
MULTI_QUESTION_TAIL = "answer the following question based on the final frame: {question}\n"


@dataclass(frozen=True)
class NeedleSetOptions:
    """How many records of each kind, the chain lengths, the picture size and the seed."""

    single: int = 20
    multi: int = 10
    hops: tuple[int, ...] = (5, 6, 7)
    size: int = 256
    seed: int = 0
    attributes: tuple[str, ...] = ATTRIBUTES  # what the questions may ask about

    def __post_init__(self) -> None:
        object.__setattr__(self, "hops", tuple(self.hops))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        if not self.attributes or set(self.attributes) - set(ATTRIBUTES):
            raise OptionError(f"attributes are among {', '.join(ATTRIBUTES)}, got {', '.join(self.attributes)}")
        if self.single < 0 or self.multi < 0:
            raise OptionError(f"needle counts must be >= 0, got single={self.single}, multi={self.multi}")
        if self.single + self.multi == 0:
            raise OptionError("a needle set needs at least one record: set single or multi above 0")
        if not self.hops or min(self.hops) < 2:
            raise OptionError(f"every chain length in hops must be >= 2 pictures, got hops={self.hops}")
        if self.size < MIN_SIZE:
            raise OptionError(f"picture size must be >= {MIN_SIZE} pixels, got {self.size}")



@dataclass(frozen=True)
class Needle:
    """One picture placed in the set: its file (relative to the set folder), what it shows, what it hides."""

    path: str
    spec: PictureSpec
    asked: str
    instruction: str | None = None

    @property
    def caption(self) -> str:
        return self.spec.caption(self.asked)


@dataclass(frozen=True)
class SingleHop:
    needle: Needle
    record: dict[str, object]


@dataclass(frozen=True)
class MultiHop:
    """`chain` is in hop order (picture 1 first, the plain final picture last); `record["images"]` is shuffled."""

    chain: tuple[Needle, ...]
    record: dict[str, object]


@dataclass(frozen=True)
class NeedleSet:
    single: tuple[SingleHop, ...]
    multi: tuple[MultiHop, ...]
    size: int


@dataclass
class _Catalogue:
    """The pictures drawn so far for one set; a new one is only taken if no caption clashes either way."""

    rng: random.Random
    attributes: tuple[str, ...] = ATTRIBUTES
    taken: list[tuple[PictureSpec, str]] = field(default_factory=list)
    count: int = 0

    def fresh(self) -> tuple[PictureSpec, str, str]:
        """A new picture, the attribute its caption hides, and a new file name."""
        for _ in range(MAX_TRIES):
            spec = random_spec(self.rng)
            asked = self.rng.choice(self.attributes)
            if not any(spec.fits(old, asked) or old.fits(spec, old_asked) for old, old_asked in self.taken):
                self.taken.append((spec, asked))
                name = f"p{self.count:05d}"
                self.count += 1
                return spec, asked, name
        raise OptionError(
            f"could not draw picture {len(self.taken) + 1} with a caption unlike all others: ask for fewer records"
        )


def _value_options(rng: random.Random, spec: PictureSpec, asked: str) -> tuple[str, str]:
    right = spec.value(asked)
    return options_block(rng, right, rng.sample([v for v in DOMAINS[asked] if v != right], 3))


def _single_hop(catalogue: _Catalogue, index: int) -> SingleHop:
    spec, asked, name = catalogue.fresh()
    needle = Needle(f"single/{name}.png", spec, asked)
    block, letter = _value_options(catalogue.rng, spec, asked)
    question = f"Find the frame of {needle.caption}. {QUESTIONS[asked]}\n{block}{ANSWER_TAIL}"
    return SingleHop(needle, {"question": question, "answer": letter, "image": needle.path, "id": index})


def _caption_distractors(catalogue: _Catalogue, chain: Sequence[Needle]) -> list[str]:
    """Three wrong captions for the final picture: captions of the chain's other pictures first, then made-up ones."""
    final = chain[-1]
    rng = catalogue.rng
    others = [needle.caption for needle in chain[:-1]]
    picked = rng.sample(others, min(3, len(others)))
    while len(picked) < 3:
        spec, asked = random_spec(rng), rng.choice(ATTRIBUTES)
        text = spec.caption(asked)
        if not spec.fits(final.spec, asked) and text not in picked:
            picked.append(text)
    return picked


def _multi_hop(catalogue: _Catalogue, index: int, hops: tuple[int, ...]) -> MultiHop:
    rng = catalogue.rng
    count = rng.choice(hops)
    drawn = [catalogue.fresh() for _ in range(count)]
    chain: list[Needle] = []
    for k, (spec, asked, name) in enumerate(drawn[:-1], start=1):
        following = drawn[k]
        instruction = f"Find the frame of {following[0].caption(following[1])}"
        chain.append(Needle(f"multi/niah_{index}_{k}_{name}.png", spec, asked, instruction))
    spec, asked, name = drawn[-1]
    chain.append(Needle(f"multi/{name}.png", spec, asked))
    final = chain[-1]
    prefix = MULTI_PREFIX.format(caption=chain[0].caption)
    block1, letter1 = options_block(rng, final.caption, _caption_distractors(catalogue, chain))
    block2, letter2 = _value_options(rng, final.spec, final.asked)
    images = [needle.path for needle in chain]
    rng.shuffle(images)
    record: dict[str, object] = {
        "images": images,
        "question1": f"{prefix}{MULTI_CAPTION_TAIL}{block1}{ANSWER_TAIL}",
        "answer1": letter1,
        "question2": f"{prefix}{MULTI_QUESTION_TAIL.format(question=QUESTIONS[final.asked])}{block2}{ANSWER_TAIL}",
        "answer2": letter2,
    }
    return MultiHop(tuple(chain), record)


def plan_needle_set(options: NeedleSetOptions = NeedleSetOptions()) -> NeedleSet:
    """Every record and picture of the set, in memory; `write_needle_set` draws and writes it."""
    catalogue = _Catalogue(random.Random(options.seed), options.attributes)
    single = tuple(_single_hop(catalogue, i) for i in range(options.single))
    multi = tuple(_multi_hop(catalogue, i, options.hops) for i in range(options.multi))
    return NeedleSet(single, multi, options.size)


def write_needle_set(out: str | Path, options: NeedleSetOptions = NeedleSetOptions()) -> tuple[Path, Path]:
    """Write out/single/*.png, out/multi/*.png and the two JSON files; return the (single, multi) JSON paths.

    Refuses to write into a folder that already holds either JSON file, so nothing a user had is overwritten.
    """
    folder = Path(out)
    single_path, multi_path = folder / SINGLE_JSON, folder / MULTI_JSON
    for path in (single_path, multi_path):
        if path.exists():
            raise OptionError(f"{path} already exists: write the needle set into a new or empty folder")
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"{folder} is a file, not a folder: give a folder for the needle set")
    needle_set = plan_needle_set(options)
    for sub in ("single", "multi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    needles = [item.needle for item in needle_set.single] + [n for item in needle_set.multi for n in item.chain]
    for needle in needles:
        draw_picture(needle.spec, options.size, needle.instruction).save(folder / needle.path, format="PNG")
    _write_json(single_path, [item.record for item in needle_set.single])
    _write_json(multi_path, [item.record for item in needle_set.multi])
    return single_path, multi_path


def _write_json(path: Path, records: list[dict[str, object]]) -> None:
    write_text_atomic(path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")
