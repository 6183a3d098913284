"""The photo inside a feed screenshot is found whole, smooth sky included."""

from __future__ import annotations

import pytest
from conftest import bsds
from PIL import Image, ImageDraw, ImageFilter

from imgverify.signals.regions import _iou, find_parts, photo_region


def _feed_screenshot(photo: Image.Image, dark: bool, indent: int) -> tuple[Image.Image, tuple]:
    """A phone-sized page: header, three lines of text, the photo, icons, more text."""
    W, H = 1080, 2340
    bg, fg = ((0, 0, 0), (240, 240, 240)) if dark else ((255, 255, 255), (20, 20, 20))
    page = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(page)
    d.ellipse((36, 160, 132, 256), fill=(200, 80, 80))
    for i in range(3):
        d.text((indent or 36, 300 + i * 60), "Breaking: scenes from last night " * 2, fill=fg,
               font_size=40)
    pw = W - indent - (36 if indent else 0)
    ph = round(pw * photo.height / photo.width)
    top = 500
    page.paste(photo.resize((pw, ph)), (indent, top))
    for k in range(3):
        d.ellipse((36 + 260 * k, top + ph + 30, 92 + 260 * k, top + ph + 86), outline=fg,
                  width=5)
    d.text((36, top + ph + 140), "Liked by someone and 312 others", fill=fg, font_size=32)
    return page, (indent, top, indent + pw, top + ph)


@pytest.mark.parametrize("dark", [False, True])
@pytest.mark.parametrize("indent", [0, 156])
def test_photo_with_a_smooth_half_is_found_whole(dark: bool, indent: int) -> None:
    photo = Image.open(bsds(1, split="val")[0]).convert("RGB")
    # a featureless sky over the top 40 %: rows there have no texture at all
    sky = photo.crop((0, 0, photo.width, int(photo.height * 0.4)))
    photo.paste(sky.filter(ImageFilter.GaussianBlur(40)), (0, 0))
    page, truth = _feed_screenshot(photo, dark, indent)
    box = photo_region(page)
    assert box is not None
    assert _iou(box, truth) > 0.85, (box, truth)
    assert ("photo", box) in find_parts(page, query=True)


def test_text_only_page_has_no_photo() -> None:
    page = Image.new("RGB", (1080, 2340), "white")
    d = ImageDraw.Draw(page)
    for i in range(30):
        d.text((36, 100 + i * 70), "Nothing but words on this page, line after line", fill="black",
               font_size=40)
    d.rectangle((0, 2200, 1080, 2340), fill=(30, 90, 200))  # a solid tab bar: no texture
    assert photo_region(page) is None


@pytest.mark.parametrize("indent", [0, 156])
def test_photo_whose_sky_is_the_page_colour_is_found_whole(indent: int) -> None:
    """Burnt-out sky on a white page: the top rows of the photo are mostly page-white with
    faint clouds, so the band alone starts too low; it grows up to the margin above."""
    photo = Image.open(bsds(1, split="val")[0]).convert("RGB")
    top = int(photo.height * 0.35)
    sky = Image.new("RGB", (photo.width, top), (255, 255, 255))
    d = ImageDraw.Draw(sky)
    for k in range(12):  # faint clouds: every sky row is partly a little grey
        x, y = (k * 53) % photo.width, (k * 37) % top
        d.ellipse((x - 40, y - 25, x + 40, y + 25), fill=(225, 228, 232))
    photo.paste(sky.filter(ImageFilter.GaussianBlur(6)), (0, 0))
    page, truth = _feed_screenshot(photo, dark=False, indent=indent)
    box = photo_region(page)
    assert box is not None
    assert _iou(box, truth) > 0.85, (box, truth)


def _trim_line_by_line(rgb: Image.Image, tolerance: float = 10.0,
                       min_fraction: float = 0.02) -> tuple[int, int, int, int] | None:
    """`trim_uniform_borders` as it was written first, one numpy call per line."""
    import numpy as np

    arr = np.asarray(rgb.convert("L"), dtype=np.int16)
    h, w = arr.shape
    if h < 16 or w < 16:
        return None

    def flat(line: np.ndarray, ref: float) -> bool:
        return bool(np.percentile(np.abs(line - ref), 98) <= tolerance)

    top, bottom, left, right = 0, h, 0, w
    ref = float(np.median(arr[0, :]))
    while top < h // 2 and flat(arr[top, :], ref):
        top += 1
    ref = float(np.median(arr[-1, :]))
    while bottom > top + h // 4 and flat(arr[bottom - 1, :], ref):
        bottom -= 1
    ref = float(np.median(arr[:, 0]))
    while left < w // 2 and flat(arr[top:bottom, left], ref):
        left += 1
    ref = float(np.median(arr[:, -1]))
    while right > left + w // 4 and flat(arr[top:bottom, right - 1], ref):
        right -= 1
    if max((top + (h - bottom)) / h, (left + (w - right)) / w) < min_fraction:
        return None
    if (bottom - top) < 0.2 * h or (right - left) < 0.2 * w:
        return None
    return (left, top, right, bottom)


def test_border_trim_judged_by_blocks_is_the_line_by_line_trim() -> None:
    """The block-at-a-time border scan finds exactly the borders the per-line scan found:
    real photos, framed, letterboxed, padded on one side, nearly flat, and tiny."""
    import random

    from PIL import ImageOps

    from imgverify.signals.hashing import trim_uniform_borders

    rnd = random.Random(7)
    cases: list[Image.Image] = []
    for path in bsds(6, start=30):
        im = Image.open(path).convert("RGB")
        cases.append(im)
        for _ in range(4):
            border = tuple(rnd.randrange(0, rnd.choice([1, 40, 120])) for _ in range(4))
            fill = rnd.choice(["black", "white", (90, 90, 90)])
            cases.append(ImageOps.expand(im, border=border, fill=fill))
        cases.append(im.resize((im.width // 20, im.height // 20)))
    cases.append(Image.new("RGB", (300, 200), "white"))
    flat = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(flat).rectangle((140, 90, 160, 110), fill="black")
    cases.append(flat)
    for case in cases:
        assert trim_uniform_borders(case) == _trim_line_by_line(case), case.size
    assert sum(_trim_line_by_line(c) is not None for c in cases) >= 12  # borders were found
