"""Edits a recycled photo goes through on its way to a viral post, with realistic parameters.

Each edit is `f(picture, rnd, pool) -> (picture, description)`; `pool` supplies other photos
(for collages). Parameters are drawn from `rnd` so a benchmark run is reproducible.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

Edit = Callable[[Image.Image, random.Random, Sequence[Image.Image]],
                tuple[Image.Image, str]]


def reencode(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def jpeg(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]) -> tuple[Image.Image, str]:
    q = r.randint(20, 60)
    return reencode(im, q), f"jpeg q{q}"


def thumbnail(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
              ) -> tuple[Image.Image, str]:
    side = r.randint(120, 320)
    t = im.copy()
    t.thumbnail((side, side))
    return t, f"thumbnail {t.width}x{t.height}"


def blur(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]) -> tuple[Image.Image, str]:
    radius = r.uniform(1, 3)
    return im.filter(ImageFilter.GaussianBlur(radius)), f"blur r{radius:.1f}"


def noise(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]) -> tuple[Image.Image, str]:
    import numpy as np

    sigma = r.uniform(5, 20)
    rng = np.random.default_rng(r.randint(0, 2**31))
    arr = np.asarray(im, dtype=np.float32) + rng.normal(0, sigma, (im.height, im.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype("uint8")), f"noise sigma {sigma:.0f}"


def grayscale(im: Image.Image, _r: random.Random, _p: Sequence[Image.Image]
              ) -> tuple[Image.Image, str]:
    return im.convert("L").convert("RGB"), "grayscale"


def colour_filter(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
                  ) -> tuple[Image.Image, str]:
    kind = r.choice(["sepia", "warm", "cool", "saturation"])
    if kind == "sepia":
        g = im.convert("L")
        return ImageOps.colorize(g, (40, 26, 13), (255, 236, 200)), "sepia"
    if kind == "saturation":
        f = r.uniform(0.3, 1.8)
        return ImageEnhance.Color(im).enhance(f), f"saturation x{f:.1f}"
    rr, gg, bb = im.split()
    if kind == "warm":
        rr = rr.point(lambda v: min(255, int(v * 1.15)))
        bb = bb.point(lambda v: int(v * 0.85))
    else:
        bb = bb.point(lambda v: min(255, int(v * 1.15)))
        rr = rr.point(lambda v: int(v * 0.85))
    return Image.merge("RGB", (rr, gg, bb)), kind


def gamma(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]) -> tuple[Image.Image, str]:
    g = r.choice([r.uniform(0.5, 0.8), r.uniform(1.25, 2.0)])
    return im.point(lambda v: int(255 * (v / 255) ** g)), f"gamma {g:.2f}"


def brightness_contrast(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
                        ) -> tuple[Image.Image, str]:
    b, c = r.uniform(0.7, 1.3), r.uniform(0.7, 1.3)
    out = ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(b)).enhance(c)
    return out, f"brightness x{b:.2f} contrast x{c:.2f}"


def mirror(im: Image.Image, _r: random.Random, _p: Sequence[Image.Image]
           ) -> tuple[Image.Image, str]:
    return ImageOps.mirror(im), "mirror"


def rotate90(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
             ) -> tuple[Image.Image, str]:
    k = r.choice([90, 180, 270])
    op = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
          270: Image.Transpose.ROTATE_270}[k]
    return im.transpose(op), f"rotate {k}"


def small_rotation(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
                   ) -> tuple[Image.Image, str]:
    import math

    deg = r.uniform(2, 10) * r.choice([-1, 1])
    rot = im.rotate(deg, resample=Image.Resampling.BICUBIC, expand=False)
    a = math.radians(abs(deg))
    w, h = im.size
    # largest axis-aligned rectangle inside the rotated frame (hides the corners)
    cw = (w * math.cos(a) - h * math.sin(a)) / math.cos(2 * a)
    ch = (h * math.cos(a) - w * math.sin(a)) / math.cos(2 * a)
    cw, ch = max(16, int(cw)), max(16, int(ch))
    x, y = (w - cw) // 2, (h - ch) // 2
    return rot.crop((x, y, x + cw, y + ch)), f"rotate {deg:.1f}° and crop"


def _crop(keep: float) -> Edit:
    def edit(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
             ) -> tuple[Image.Image, str]:
        aspect = r.uniform(0.8, 1.2)
        w, h = im.size
        cw = min(w, int(w * (keep * aspect) ** 0.5))
        ch = min(h, int(h * keep / max(1e-6, cw / w)))
        x, y = r.randint(0, w - cw), r.randint(0, h - ch)
        return im.crop((x, y, x + cw, y + ch)), f"crop keeps {cw * ch / (w * h):.0%}"
    return edit


def letterbox(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
              ) -> tuple[Image.Image, str]:
    ratio = r.choice([16 / 9, 9 / 16, 1.0])
    colour = r.choice([(0, 0, 0), (255, 255, 255)])
    w, h = im.size
    if w / h < ratio:
        cw, ch = int(h * ratio), h
    else:
        cw, ch = w, int(w / ratio)
    canvas = Image.new("RGB", (max(cw, w), max(ch, h)), colour)
    canvas.paste(im, ((canvas.width - w) // 2, (canvas.height - h) // 2))
    return canvas, f"letterbox to {ratio:.2f} {colour}"


def padding(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
            ) -> tuple[Image.Image, str]:
    f = r.uniform(0.05, 0.2)
    colour = tuple(r.randint(0, 255) for _ in range(3))
    pad = int(max(im.size) * f)
    return ImageOps.expand(im, pad, fill=colour), f"padding {f:.0%}"


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill: object,
          size: int) -> None:
    try:
        from PIL import ImageFont

        font = ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        font = None
    draw.text(xy, text, fill=fill, font=font)  # type: ignore[arg-type]


WORDS = ("breaking news tonight the city after strike flood rescue video shows scene "
         "people watch share this now").split()


def _sentence(r: random.Random, n: int) -> str:
    return " ".join(r.choice(WORDS) for _ in range(n)).capitalize()


def story(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
          ) -> tuple[Image.Image, str]:
    canvas_w, canvas_h = 1080, 1920
    bg = im.resize((int(canvas_h * im.width / im.height), canvas_h))
    bg = bg.crop(((bg.width - canvas_w) // 2, 0, (bg.width - canvas_w) // 2 + canvas_w,
                  canvas_h)) if bg.width >= canvas_w else bg.resize((canvas_w, canvas_h))
    bg = ImageEnhance.Brightness(bg.filter(ImageFilter.GaussianBlur(30))).enhance(0.6)
    scale = r.uniform(0.8, 1.0)
    pw = int(canvas_w * scale)
    ph = int(pw * im.height / im.width)
    bg.paste(im.resize((pw, ph)), ((canvas_w - pw) // 2, (canvas_h - ph) // 2))
    if r.random() < 0.6:
        _text(ImageDraw.Draw(bg), (60, 200), _sentence(r, 4), "white", 54)
    return bg, f"story frame, photo at {scale:.0%} width"


def screenshot(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
               ) -> tuple[Image.Image, str]:
    w = 1080
    pw = int(w * r.uniform(0.92, 1.0))
    ph = int(pw * im.height / im.width)
    top, text_h = 170, 70 * r.randint(1, 3)
    h = top + 120 + text_h + ph + 220
    dark = r.random() < 0.3
    bgc, fg = ((0, 0, 0), (230, 230, 230)) if dark else ((255, 255, 255), (20, 20, 20))
    canvas = Image.new("RGB", (w, h), bgc)
    d = ImageDraw.Draw(canvas)
    d.rectangle((0, 0, w, top), fill=(30, 30, 30) if dark else (245, 245, 245))
    _text(d, (40, 60), "9:41", fg, 40)
    d.ellipse((40, top + 20, 120, top + 100), fill=(r.randint(0, 255), 120, 200))
    _text(d, (140, top + 35), "@" + r.choice(WORDS) + str(r.randint(1, 999)), fg, 40)
    for i in range(text_h // 70):
        _text(d, (40, top + 120 + 70 * i), _sentence(r, 6), fg, 40)
    y = top + 120 + text_h
    canvas.paste(im.resize((pw, ph)), ((w - pw) // 2, y))
    y += ph + 40
    for i, label in enumerate(("♥ 12K", "💬 873", "↗ Share")):
        _text(d, (40 + 330 * i, y + 40), label, fg, 44)
    return canvas, "social-media screenshot"


def caption_bar(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
                ) -> tuple[Image.Image, str]:
    frac = r.uniform(0.1, 0.25)
    bar = int(im.height * frac)
    colour, fg = r.choice([((255, 255, 255), "black"), ((0, 0, 0), "white")])
    canvas = Image.new("RGB", (im.width, im.height + bar), colour)
    above = r.random() < 0.5
    canvas.paste(im, (0, bar if above else 0))
    _text(ImageDraw.Draw(canvas), (10, (0 if above else im.height) + bar // 3),
          _sentence(r, 5).upper(), fg, max(12, bar // 3))
    return canvas, f"caption bar {frac:.0%} {'above' if above else 'below'}"


def watermark(im: Image.Image, r: random.Random, _p: Sequence[Image.Image]
              ) -> tuple[Image.Image, str]:
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    text = r.choice(["@newsfeed", "BREAKING", "© viralnow", "EXCLUSIVE"])
    size = max(12, im.width // 12)
    if r.random() < 0.5:
        for y in range(0, im.height, size * 3):
            _text(d, (r.randint(0, size), y), (text + "   ") * 4, (255, 255, 255, 90), size)
        where = "tiled"
    else:
        _text(d, (im.width // 20, im.height - 2 * size), text, (255, 255, 255, 200), size)
        where = "corner"
    out = Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
    return out, f"watermark {text!r} {where}"


def collage(im: Image.Image, r: random.Random, pool: Sequence[Image.Image]
            ) -> tuple[Image.Image, str]:
    n = r.choice([2, 3])
    cell = 1080 // n
    canvas = Image.new("RGB", (cell * n, cell * n), (255, 255, 255))
    slot = r.randrange(n * n)
    others = list(r.sample(list(pool), min(len(pool), n * n - 1)))
    for i in range(n * n):
        tile = im if i == slot else others.pop() if others else im
        fitted = ImageOps.fit(tile, (cell - 4, cell - 4))  # crop-to-fill, as collage apps do
        canvas.paste(fitted, ((i % n) * cell + 2, (i // n) * cell + 2))
    return canvas, f"tile {slot + 1} of a {n}x{n} collage"


BENIGN: dict[str, Edit] = {
    "jpeg": jpeg, "thumbnail": thumbnail, "blur": blur, "noise": noise,
    "grayscale": grayscale, "colour_filter": colour_filter, "gamma": gamma,
    "brightness_contrast": brightness_contrast, "mirror": mirror, "rotate90": rotate90,
    "letterbox": letterbox,
}
HARD: dict[str, Edit] = {
    "small_rotation": small_rotation, "crop_90": _crop(0.9), "crop_75": _crop(0.75),
    "crop_60": _crop(0.6), "crop_40": _crop(0.4), "padding": padding, "story": story,
    "screenshot": screenshot, "caption_bar": caption_bar, "watermark": watermark,
    "collage": collage,
}


def chain3(im: Image.Image, r: random.Random, pool: Sequence[Image.Image]
           ) -> tuple[Image.Image, str]:
    first = r.choice(["crop_90", "crop_75", "mirror", "small_rotation"])
    second = r.choice(["caption_bar", "watermark", "colour_filter", "letterbox"])
    third = r.choice(["jpeg", "thumbnail", "brightness_contrast"])
    steps = []
    for name in (first, second, third):
        im, desc = EDITS[name](im, r, pool)
        steps.append(desc)
    return im, " + ".join(steps)


EDITS: dict[str, Edit] = {**BENIGN, **HARD, "chain3": chain3}

#: the issue's targets: recall of likely-or-possible with the right reference on top
TARGETS = {**{k: 0.99 for k in BENIGN}, "crop_90": 0.95, "crop_75": 0.95, "crop_60": 0.95,
           "small_rotation": 0.95, "caption_bar": 0.95, "watermark": 0.95,
           "screenshot": 0.95, "story": 0.95, "chain3": 0.95, "padding": 0.99,
           "crop_40": 0.85, "collage": 0.85}
