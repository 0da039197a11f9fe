"""Synthetic pictures that both the NIAH needle sets and the training tasks draw: a shape of one colour with a
large symbol inside, on a patterned background (`PictureSpec`, `draw_picture`), and the words used to ask about
one (captions, questions, the four-option block in the official NIAH form).

Everything is drawn from the spec itself or a seeded `random.Random`: the same spec gives the same pixels.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hico.errors import OptionError

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
ANSWER_TAIL = "\nOnly give the best option. Best option: ("


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
