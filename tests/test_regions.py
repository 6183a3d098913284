"""The photo inside a feed screenshot is found whole, smooth sky included."""

from __future__ import annotations

import io
from typing import Any

import pytest
from conftest import bsds, jpeg_bytes
from PIL import Image, ImageDraw, ImageFilter

from imgverify.signals.regions import _iou, caption_band, find_parts, photo_region


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


def _card(page: Image.Image, truth: tuple, width: int, dark_page: bool
          ) -> tuple[Image.Image, tuple]:
    """`page` shown as a rounded card inside another app's page of the same colour (a
    screenshot of a screenshot), `width` wide, and the photo's box in the new page."""
    W, H = 1080, 2340
    bg = (0, 0, 0) if dark_page else (255, 255, 255)
    outer = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(outer)
    d.text((36, 40), "Following", fill=(128, 128, 128), font_size=44)
    f = width / page.width
    inner = page.resize((width, round(page.height * f)))
    x, y = (W - width) // 2 + 60, 200
    outer.paste(inner.crop((0, 0, width, min(inner.height, H - 400))), (x, y))
    d.rounded_rectangle((x - 2, y - 2, x + width + 2, H - 198), 24, outline=(190, 190, 190),
                        width=3)
    d.text((36, H - 150), "12.5K   786   9.5K", fill=(128, 128, 128), font_size=40)
    x0, y0, x1, y1 = truth
    return outer, (x + x0 * f, y + y0 * f, x + x1 * f, y + y1 * f)


def _holds(box: tuple, truth: tuple, within: float = 0.75) -> bool:
    """`box` holds the whole photo (`truth`) and the photo fills at least `within` of it:
    what the local stage needs of a region (text lines beside the photo cost little)."""
    ix = max(0.0, min(box[2], truth[2]) - max(box[0], truth[0]))
    iy = max(0.0, min(box[3], truth[3]) - max(box[1], truth[1]))
    inter = ix * iy
    return (inter >= 0.95 * (truth[2] - truth[0]) * (truth[3] - truth[1])
            and inter >= within * (box[2] - box[0]) * (box[3] - box[1]))


@pytest.mark.parametrize("dark", [False, True])
def test_a_photo_in_a_card_in_a_card_is_found(dark: bool) -> None:
    """A feed post screenshotted inside another feed's card: the photo is indented twice
    and fills only about two thirds of each of its rows, the rest being the page's
    colour."""
    photo = Image.open(bsds(1, split="val")[0]).convert("RGB")
    inner, truth = _feed_screenshot(photo, dark, indent=156)
    page, truth = _card(inner, truth, 820, dark)
    box = photo_region(page)
    assert box is not None
    assert _holds(box, truth), (box, truth)


def test_a_band_cut_with_a_sliver_of_the_outer_page_finds_the_photo_inside() -> None:
    """The photo band of a screenshot of a screenshot is often cut a few pixels wide of
    the inner screenshot, keeping a sliver of the outer (white) page down both sides; the
    inner page (dark) is still the page around the photo."""
    photo = Image.open(bsds(1, split="val")[0]).convert("RGB")
    inner, truth = _feed_screenshot(photo, dark=True, indent=156)
    inner = inner.resize((540, 1170))
    band = Image.new("RGB", (556, 1000), (255, 255, 255))
    band.paste(inner.crop((0, 300, 540, 1300)), (8, 0))
    x0, y0, x1, y1 = (v / 2 for v in truth)
    box = photo_region(band, cut=True)
    assert box is not None
    assert _iou(box, (round(x0 + 8), round(y0 - 300), round(x1 + 8), round(y1 - 300))) > 0.85, \
        (box, truth)


def test_a_dark_photo_on_a_dark_page_is_not_cut_to_its_bright_middle() -> None:
    """The wider row share for doubly indented photos needs a filled box: a photo that is
    near-black but for a bright oval in its middle, on a black page, must not come back as
    the oval's bounding box (it is searched whole, as before)."""
    photo = Image.open(bsds(1, split="val")[0]).convert("RGB")
    w, h = photo.size
    oval = Image.new("L", (w, h), 0)
    ImageDraw.Draw(oval).ellipse((0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h), fill=255)
    dark = Image.composite(photo, Image.new("RGB", (w, h), (0, 0, 0)), oval)
    page, truth = _feed_screenshot(dark, dark=True, indent=0)
    box = photo_region(page)
    assert box is None or _holds(box, truth, 0.5), (box, truth)


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


def _meme(photo: Image.Image, bar_share: float, where: str, dark: bool, lines: int
          ) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A meme: a flat bar above or below the photo with one or two lines of big capitals."""
    bg, fg = ((0, 0, 0), (255, 255, 255)) if dark else ((255, 255, 255), (0, 0, 0))
    bar = round(photo.height * bar_share)
    canvas = Image.new("RGB", (photo.width, photo.height + bar), bg)
    top = bar if where == "above" else 0
    canvas.paste(photo, (0, top))
    d = ImageDraw.Draw(canvas)
    size = int(bar / (lines * 1.5))
    y = (0 if where == "above" else photo.height) + (bar - lines * size * 1.25) / 2
    for text in ["WHEN THE ROCKETS FELL LAST NIGHT", "NOBODY SHOWED THIS"][:lines]:
        d.text((photo.width * 0.04, y), text, fill=fg, font_size=size)
        y += size * 1.25
    return canvas, (0, top, photo.width, top + photo.height)


@pytest.mark.parametrize("where", ["above", "below"])
@pytest.mark.parametrize("dark", [False, True])
@pytest.mark.parametrize("bar_share,lines", [(0.1, 1), (0.25, 2)])
def test_the_photo_under_a_caption_bar_is_a_part_of_its_own(
        where: str, dark: bool, bar_share: float, lines: int) -> None:
    """photo_region takes its background from all four edges, most of which are the photo's
    own in a meme, so it misses the bar; `caption_band` judges each edge by itself."""
    for path in bsds(3, split="test"):
        photo = Image.open(path).convert("RGB")
        meme, truth = _meme(photo, bar_share, where, dark, lines)
        buf = io.BytesIO()  # as it is uploaded: JPEG ringing around the glyphs
        meme.save(buf, "JPEG", quality=85)
        meme = Image.open(buf).convert("RGB")
        band = caption_band(meme)
        assert band is not None, (path, where, dark)
        assert band[0] == 0 and band[2] == meme.width
        assert abs(band[1] - truth[1]) <= 0.02 * meme.height, (band, truth)
        assert abs(band[3] - truth[3]) <= 0.02 * meme.height, (band, truth)
        assert ("band", band) in find_parts(meme, query=True)


def test_no_caption_band_without_a_bar() -> None:
    """Photos as they were taken, and a photo in flat letterbox borders (the trim's job)."""
    found = 0
    photos = bsds(12, split="val")
    for path in photos:
        photo = Image.open(path).convert("RGB")
        found += caption_band(photo) is not None
        framed = Image.new("RGB", (photo.width, photo.height * 3 // 2), (0, 0, 0))
        framed.paste(photo, (0, photo.height // 4))
        # two flat bars and no text: the trimmed part, not another one
        assert [n for n, _ in find_parts(framed, query=True)].count("band") == 0, path
    # a photo whose top lines are one flat colour (an overcast sky) may show a band; none of
    # these do, and a band there costs one more hash, never a match on its own
    assert found <= 1, found


@pytest.mark.parametrize("dark", [False, True])
def test_a_screenshot_of_a_screenshot_of_an_archived_photo_is_found(
        small_archive: Any, dark: bool) -> None:
    """End to end: the archived photo, posted, screenshotted (JPEG), shown in another
    feed's card and screenshotted again (JPEG) is reported with its archived context."""
    import imgverify

    photo_path = small_archive.photos[3]
    photo = Image.open(photo_path).convert("RGB")
    inner, truth = _feed_screenshot(photo, dark, indent=156)
    inner = _jpeg_round_trip(inner, 80)
    page, _ = _card(inner, truth, 820, dark)
    with imgverify.Archive.open(small_archive.path) as arch:
        r = imgverify.check(jpeg_bytes(page, 85), arch)
    assert r.verdict in ("likely_recycled", "possibly_recycled"), r.verdict
    assert r.matches[0].caption == small_archive.row_of(photo_path)["caption"]


def _jpeg_round_trip(im: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(jpeg_bytes(im, quality))).convert("RGB")
