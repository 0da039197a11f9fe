"""Synthetic pictures: the shape shows its colour, the background contrasts with it."""

from __future__ import annotations

from collections import Counter

import pytest

from hico.synthetic.pictures import BACKGROUNDS, SHAPES, PictureSpec, draw_picture

# An independent table (web colours) to name what is drawn.
WEB = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
       "purple": (128, 0, 128), "orange": (255, 165, 0), "white": (255, 255, 255), "black": (0, 0, 0)}


def nearest(rgb: tuple[int, int, int]) -> str:
    return min(WEB, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, WEB[name], strict=True)))


@pytest.mark.parametrize("colour", list(WEB))
def test_shape_colour_at_centre_and_contrast(colour: str) -> None:
    """Inside a central disc (within every shape) the pixels that two symbols leave alike show the shape colour."""
    disc = [(x, y) for x in range(34, 62) for y in range(34, 62) if (x - 47.5) ** 2 + (y - 47.5) ** 2 <= 14**2]
    for i, shape in enumerate(SHAPES):
        spec = PictureSpec(BACKGROUNDS[i % len(BACKGROUNDS)], shape, colour, "1")
        one, zero = draw_picture(spec, 96), draw_picture(PictureSpec(spec.background, shape, colour, "0"), 96)
        alike = Counter(nearest(one.getpixel(p)) for p in disc if one.getpixel(p) == zero.getpixel(p))
        assert alike[colour] >= 0.9 * alike.total() and alike[colour] > len(disc) / 4, (spec, alike)
        for image in (one, zero):
            assert nearest(image.getpixel((1, 1))) != colour and nearest(image.getpixel((94, 94))) != colour
