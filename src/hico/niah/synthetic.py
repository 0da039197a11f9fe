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
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hico.errors import OptionError

SINGLE_JSON = "niah-synthetic-singlehop.json"
MULTI_JSON = "niah-synthetic-multihop.json"
MIN_SIZE = 32
LETTERS = ("A", "B", "C", "D")
ATTRIBUTES = ("colour", "shape", "symbol")

RGB = tuple[int, int, int]
COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (245, 220, 40),
    "purple": (140, 60, 190),
    "orange": (250, 140, 30),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
BACKGROUNDS = ("plain", "horizontally striped", "vertically striped", "checkerboard", "dotted", "gradient", "noisy")
SYMBOLS = tuple("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")  # no I or O: they read as 1 and 0
QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "Which shape is drawn?",
    "symbol": "Which character is drawn inside the shape?",
}
DOMAINS: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "symbol": SYMBOLS}

# Background tones: dark shapes go on light tones, light shapes on dark tones (every pair is >= 150 apart in RGB).
LIGHT_TONES: tuple[RGB, ...] = ((246, 240, 224), (200, 212, 228), (228, 206, 180))
DARK_TONES: tuple[RGB, ...] = ((24, 28, 42), (78, 70, 62), (38, 72, 56))
MAX_TRIES = 2000

MULTI_PREFIX = "Find the frame of {caption}. Locate the final frame based on the instructions in the image, and "
MULTI_CAPTION_TAIL = "choose the captions that best describe the frame: \n"
MULTI_QUESTION_TAIL = "answer the following question based on the final frame: {question}\n"
ANSWER_TAIL = "\nOnly give the best option. Best option: ("


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
class PictureSpec:
    """What one picture shows; `draw_picture` turns it into pixels, `caption` into words."""

    background: str
    shape: str
    colour: str
    symbol: str

    def __post_init__(self) -> None:
        for name, value, domain in (
            ("background", self.background, BACKGROUNDS),
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, tuple(COLOURS)),
            ("symbol", self.symbol, SYMBOLS),
        ):
            if value not in domain:
                raise OptionError(f"unknown picture {name} {value!r}: use one of {', '.join(domain)}")

    def value(self, attribute: str) -> str:
        """The picture's colour, shape or symbol."""
        if attribute not in ATTRIBUTES:
            raise OptionError(f"unknown attribute {attribute!r}: use one of {', '.join(ATTRIBUTES)}")
        return str(getattr(self, attribute))

    def caption(self, asked: str) -> str:
        """Describes the picture without naming `asked` (colour, shape or symbol)."""
        ground = f"on {article(self.background)} {self.background} background"
        kind = "digit" if self.symbol.isdigit() else "letter"
        if asked == "symbol":
            return f"{article(self.colour)} {self.colour} {self.shape} {ground}"
        if asked == "colour":
            return f"{article(self.shape)} {self.shape} with the {kind} {self.symbol} {ground}"
        if asked == "shape":
            return f"{article(self.colour)} {self.colour} shape with the {kind} {self.symbol} {ground}"
        raise OptionError(f"unknown attribute {asked!r}: use one of {', '.join(ATTRIBUTES)}")

    def fits(self, other: PictureSpec, asked: str) -> bool:
        """Whether `self.caption(asked)` also describes `other`."""
        return other.background == self.background and all(
            other.value(name) == self.value(name) for name in ATTRIBUTES if name != asked
        )


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


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def random_spec(rng: random.Random) -> PictureSpec:
    return PictureSpec(
        background=rng.choice(BACKGROUNDS),
        shape=rng.choice(SHAPES),
        colour=rng.choice(tuple(COLOURS)),
        symbol=rng.choice(SYMBOLS),
    )


def options_block(rng: random.Random, right: str, distractors: Sequence[str]) -> tuple[str, str]:
    """The options block and the letter of `right`, after a seeded shuffle."""
    choices = [right, *distractors]
    rng.shuffle(choices)
    block = "Options: " + "\n".join(f"({letter}) {text}" for letter, text in zip(LETTERS, choices, strict=True))
    return block, LETTERS[choices.index(right)]


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
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _luminance(rgb: RGB) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _is_light(colour: str) -> bool:
    return _luminance(COLOURS[colour]) > 140


def _background(spec: PictureSpec, size: int) -> Image.Image:
    """The background, with tones that contrast with the shape colour; noise is seeded by the spec itself."""
    key = f"{spec.background}|{spec.shape}|{spec.colour}|{spec.symbol}"
    rng = random.Random(zlib.crc32(key.encode()))
    base, other = rng.sample(DARK_TONES if _is_light(spec.colour) else LIGHT_TONES, 2)
    image = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(image)
    step = max(4, size // 8)
    if spec.background in ("horizontally striped", "vertically striped"):
        for start in range(0, size, step):
            box = (0, start, size, start + step // 2 - 1)
            draw.rectangle(box if spec.background.startswith("h") else (box[1], box[0], box[3], box[2]), fill=other)
    elif spec.background == "checkerboard":
        for top in range(0, size, step):
            for left in range(0, size, step):
                if (top // step + left // step) % 2:
                    draw.rectangle((left, top, left + step - 1, top + step - 1), fill=other)
    elif spec.background == "dotted":
        radius = max(1, step // 5)
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=other)
    elif spec.background in ("gradient", "noisy"):
        if spec.background == "gradient":
            weight = np.repeat(np.linspace(0.0, 1.0, size)[:, None], size, axis=1)
        else:
            weight = np.random.default_rng(rng.getrandbits(32)).random((size, size))
        pixels = np.asarray(base, float) * (1 - weight[..., None]) + np.asarray(other, float) * weight[..., None]
        image = Image.fromarray(np.rint(pixels).astype(np.uint8), "RGB")
    return image


def _regular(centre: tuple[float, float], radius: float, corners: int, turn: float) -> list[tuple[float, float]]:
    angles = np.deg2rad(turn + 360.0 * np.arange(corners) / corners)
    return [(centre[0] + radius * float(np.cos(a)), centre[1] + radius * float(np.sin(a))) for a in angles]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float, fill: RGB) -> float:
    """Draw the shape; return the radius of the largest circle around `centre` inside it (room for the symbol)."""
    x, y = centre
    if shape == "circle":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
        return radius
    if shape == "square":
        half = 0.78 * radius
        draw.rectangle((x - half, y - half, x + half, y + half), fill=fill)
        return half
    if shape == "triangle":
        draw.polygon(_regular((x, y + 0.12 * radius), 1.1 * radius, 3, -90.0), fill=fill)
        return 0.48 * radius
    if shape == "diamond":
        draw.polygon(_regular(centre, radius, 4, -90.0), fill=fill)
        return 0.7 * radius
    if shape == "hexagon":
        draw.polygon(_regular(centre, radius, 6, 0.0), fill=fill)
        return 0.86 * radius
    if shape == "star":
        outer = _regular(centre, 1.05 * radius, 5, -90.0)
        inner = _regular(centre, 0.55 * radius, 5, -54.0)
        draw.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=fill)
        return 0.55 * radius * 0.81
    raise OptionError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")


def _draw_symbol(draw: ImageDraw.ImageDraw, symbol: str, centre: tuple[float, float], room: float, fill: RGB) -> None:
    font = ImageFont.load_default(size=max(6, int(1.5 * room)))
    left, top, right, bottom = draw.textbbox((0, 0), symbol, font=font)
    origin = (centre[0] - (left + right) / 2, centre[1] - (top + bottom) / 2)
    draw.text(origin, symbol, font=font, fill=fill)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def _instruction_band(
    draw: ImageDraw.ImageDraw, text: str, size: int
) -> tuple[ImageFont.FreeTypeFont, list[str], int, int]:
    """The largest font (from size/18 down to 6 px) whose wrapped text fits a band of at most half the picture."""
    pad = max(2, size // 64)
    font, lines, line_height = ImageFont.load_default(size=6), [text], 8
    for font_size in range(max(8, size // 18), 5, -1):
        font = ImageFont.load_default(size=font_size)
        lines = _wrap(draw, text, font, size - 2 * pad)
        line_height = font_size + max(1, font_size // 4)
        if len(lines) * line_height + 2 * pad <= size // 2:
            break
    return font, lines, line_height, min(size - 1, len(lines) * line_height + 2 * pad)


def draw_picture(spec: PictureSpec, size: int, instruction: str | None = None) -> Image.Image:
    """A size x size RGB picture of `spec`; with `instruction`, a white band of black text across the bottom."""
    if size < MIN_SIZE:
        raise OptionError(f"picture size must be >= {MIN_SIZE} pixels, got {size}")
    image = _background(spec, size)
    draw = ImageDraw.Draw(image)
    band = _instruction_band(draw, instruction, size) if instruction else None
    area = size - (band[3] if band else 0)
    centre = (size / 2, area / 2)
    room = _draw_shape(draw, spec.shape, centre, 0.4 * min(size, area), COLOURS[spec.colour])
    _draw_symbol(draw, spec.symbol, centre, room, COLOURS["black" if _is_light(spec.colour) else "white"])
    if band:
        font, lines, line_height, height = band
        draw.rectangle((0, size - height, size, size), fill=COLOURS["white"])
        pad = max(2, size // 64)
        for row, line in enumerate(lines):
            draw.text((pad, size - height + pad + row * line_height), line, font=font, fill=COLOURS["black"])
    return image
