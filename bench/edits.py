"""Edits a recycled news photo goes through on its way to a viral repost.

Every edit is a function ``edit(picture, rnd) -> picture``: it takes an RGB `PIL.Image` and a
`random.Random`, draws its parameters from `rnd` over realistic ranges (so a benchmark run is
reproducible from its seeds) and returns a new RGB picture. The parameters it used travel
with the result in ``picture.info["edits"]``; `describe(picture)` renders them, `params(...)`
gives them as data.

    import random, edits
    registry = edits.build_edits(pool=[other_photo, ...])  # pool: photos for collage tiles
    out = registry["crop_75"](photo, random.Random(7))
    edits.describe(out)            # 'crop_75(keep=0.75, aspect=1.09, box=...)'
    data = edits.query_bytes(out, random.Random(7))   # the JPEG a user would upload

`EDITS` is the same registry over the module-level pool (`set_pool`). Collage tiles other
than the photo come from the pool: pass photos that are *not* archived, or a collage query
has more than one right answer.

A final query is always a JPEG: `query_bytes` keeps the bytes of a `jpeg` edit when that was
the last step (it already chose a quality of 20-60), otherwise re-encodes at quality 70-90.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Edit = Callable[[Image.Image, random.Random], Image.Image]

# -- bookkeeping --------------------------------------------------------------------------------


def _done(out: Image.Image, name: str, jpeg: bytes | None = None, **params: Any) -> Image.Image:
    """Attach this step's parameters to a fresh info dict (nothing stale from the input)."""
    out = out if out.mode == "RGB" else out.convert("RGB")
    info: dict[str | tuple[int, int], Any] = {"edits": [(name, params)]}
    if jpeg is not None:
        info["query_jpeg"] = jpeg
    out.info = info
    return out


def params(picture: Image.Image) -> list[tuple[str, dict[str, Any]]]:
    """[(edit name, its parameters)] of every step that made `picture`."""
    return list(picture.info.get("edits", []))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, tuple):
        return "(" + ",".join(_fmt(x) for x in v) + ")"
    return str(v)


def describe(picture: Image.Image) -> str:
    """'crop_75(keep=0.75, aspect=1.09) + caption_bar(...) + jpeg(quality=31)'."""
    steps = params(picture)
    if not steps:
        return "unedited"
    return " + ".join(f"{name}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in p.items()) + ")"
                      for name, p in steps)


def query_bytes(picture: Image.Image, rnd: random.Random) -> tuple[bytes, int]:
    """The JPEG a user uploads, and its quality: a `jpeg` edit's own bytes if it was the last
    step, else a re-encode at quality 70-90 (what phones and apps save at)."""
    own = picture.info.get("query_jpeg")
    steps = params(picture)
    if own is not None and steps and steps[-1][0] == "jpeg":
        return own, int(steps[-1][1]["quality"])
    quality = rnd.randint(70, 90)
    return encode_jpeg(picture, quality), quality


def encode_jpeg(picture: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    picture.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(8, int(size)))
    except TypeError:  # pragma: no cover - Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return int(box[2] - box[0])


WORDS = ("breaking news tonight the city after strike flood rescue video shows scene people "
         "watch share this now police crowd storm fire border army protest minister live "
         "footage today huge shocking moment").split()
HANDLES = ("newsfeed", "worldnews24", "viralnow", "dailyclips", "thetruthdaily", "realnews_hq",
           "citywatch", "globalalerts", "breaking.now", "eyewitness_tv")


def _sentence(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n)).capitalize()


# -- photometric and compression ----------------------------------------------------------------


def jpeg(im: Image.Image, r: random.Random) -> Image.Image:
    """Re-encoded by a platform or a messenger at low quality (20-60)."""
    q = r.randint(20, 60)
    data = encode_jpeg(im, q)
    out = Image.open(io.BytesIO(data)).convert("RGB")
    return _done(out, "jpeg", jpeg=data, quality=q)


def thumbnail(im: Image.Image, r: random.Random) -> Image.Image:
    """A preview or link-card image: long side 120-320 px."""
    side = r.randint(120, 320)
    t = im.copy()
    t.thumbnail((side, side), Image.Resampling.LANCZOS)
    return _done(t, "thumbnail", long_side=side, size=t.size)


def blur(im: Image.Image, r: random.Random) -> Image.Image:
    radius = r.uniform(1.0, 3.0)
    return _done(im.filter(ImageFilter.GaussianBlur(radius)), "blur", radius=radius)


def noise(im: Image.Image, r: random.Random) -> Image.Image:
    sigma = r.uniform(5.0, 20.0)
    rng = np.random.default_rng(r.getrandbits(32))
    arr = np.asarray(im, dtype=np.float32) + rng.normal(0.0, sigma, (im.height, im.width, 3))
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    return _done(out, "noise", sigma=sigma)


def grayscale(im: Image.Image, r: random.Random) -> Image.Image:
    return _done(im.convert("L").convert("RGB"), "grayscale")


_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]],
                  dtype=np.float32)


def colour_filter(im: Image.Image, r: random.Random) -> Image.Image:
    """An app filter: sepia, warm, cool, or saturation x0.3-1.8."""
    kind = r.choice(["sepia", "warm", "cool", "saturation"])
    if kind == "saturation":
        f = r.uniform(0.3, 1.8)
        return _done(ImageEnhance.Color(im).enhance(f), "colour_filter", kind=kind, factor=f)
    arr = np.asarray(im, dtype=np.float32)
    if kind == "sepia":
        strength = r.uniform(0.6, 1.0)
        toned = arr @ _SEPIA.T
        arr = (1 - strength) * arr + strength * toned
        extra: dict[str, Any] = {"strength": strength}
    else:
        s = r.uniform(0.06, 0.2)
        gain = np.array([1 + s, 1 + s / 4, 1 - s] if kind == "warm" else [1 - s, 1 + s / 4, 1 + s],
                        dtype=np.float32)
        arr = arr * gain
        extra = {"shift": s}
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    return _done(out, "colour_filter", kind=kind, **extra)


def gamma(im: Image.Image, r: random.Random) -> Image.Image:
    """Gamma 0.5-2.0 (log-uniform, so brightening and darkening are equally likely)."""
    g = math.exp(r.uniform(math.log(0.5), math.log(2.0)))
    lut = [min(255, int(round(255 * (v / 255) ** g))) for v in range(256)] * 3
    return _done(im.point(lut), "gamma", gamma=g)


def brightness_contrast(im: Image.Image, r: random.Random) -> Image.Image:
    b, c = r.uniform(0.7, 1.3), r.uniform(0.7, 1.3)
    out = ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(b)).enhance(c)
    return _done(out, "brightness_contrast", brightness=b, contrast=c)


# -- geometry -----------------------------------------------------------------------------------


def mirror(im: Image.Image, r: random.Random) -> Image.Image:
    return _done(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "mirror")


def rotate90(im: Image.Image, r: random.Random) -> Image.Image:
    k = r.choice([90, 180, 270])
    op = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
          270: Image.Transpose.ROTATE_270}[k]
    return _done(im.transpose(op), "rotate90", degrees_ccw=k)


def largest_rotated_rect(w: float, h: float, angle_rad: float) -> tuple[float, float]:
    """Largest axis-aligned rectangle inside a w x h rectangle rotated by `angle_rad`."""
    if w <= 0 or h <= 0:
        return 0.0, 0.0
    width_is_longer = w >= h
    side_long, side_short = (w, h) if width_is_longer else (h, w)
    sin_a, cos_a = abs(math.sin(angle_rad)), abs(math.cos(angle_rad))
    if side_short <= 2.0 * sin_a * cos_a * side_long or abs(sin_a - cos_a) < 1e-10:
        x = 0.5 * side_short
        wr, hr = (x / sin_a, x / cos_a) if width_is_longer else (x / cos_a, x / sin_a)
    else:
        cos_2a = cos_a * cos_a - sin_a * sin_a
        wr, hr = (w * cos_a - h * sin_a) / cos_2a, (h * cos_a - w * sin_a) / cos_2a
    return wr, hr


def small_rotation(im: Image.Image, r: random.Random) -> Image.Image:
    """Straightened (or tilted) by 2-10 degrees, cropped to hide the corners."""
    deg = r.uniform(2.0, 10.0) * r.choice([-1, 1])
    rot = im.rotate(deg, resample=Image.Resampling.BICUBIC, expand=True)
    cw, ch = largest_rotated_rect(im.width, im.height, math.radians(deg))
    cw, ch = int(cw) - 2, int(ch) - 2  # stay clear of interpolated edge pixels
    x, y = (rot.width - cw) // 2, (rot.height - ch) // 2
    out = rot.crop((x, y, x + cw, y + ch))
    return _done(out, "small_rotation", degrees_ccw=deg,
                 kept=cw * ch / (im.width * im.height))


def crop(keep: float) -> Edit:
    """Keep `keep` of the area; the window's aspect ratio varies by up to 20 % from the
    photo's and it sits at a random position."""

    def edit(im: Image.Image, r: random.Random) -> Image.Image:
        w, h = im.size
        aspect = r.uniform(0.8, 1.2)  # window aspect relative to the photo's
        cw, ch = w * math.sqrt(keep * aspect), h * math.sqrt(keep / aspect)
        if cw > w:
            cw, ch = w, keep * h
        if ch > h:
            cw, ch = keep * w, h
        cw, ch = max(16, int(round(cw))), max(16, int(round(ch)))
        x, y = r.randint(0, w - cw), r.randint(0, h - ch)
        out = im.crop((x, y, x + cw, y + ch))
        return _done(out, f"crop_{int(round(keep * 100))}", keep=cw * ch / (w * h),
                     aspect=(cw / ch) / (w / h), box=(x, y, x + cw, y + ch))

    edit.__name__ = f"crop_{int(round(keep * 100))}"
    return edit


# -- framing and overlays -----------------------------------------------------------------------


def _blurred_cover(im: Image.Image, size: tuple[int, int], radius: float,
                   darken: float = 1.0) -> Image.Image:
    """The photo enlarged to cover `size`, blurred (at quarter scale: same look, 16x cheaper)
    and optionally darkened."""
    small = (max(1, size[0] // 4), max(1, size[1] // 4))
    bg = ImageOps.fit(im, small, Image.Resampling.BILINEAR)
    bg = bg.filter(ImageFilter.GaussianBlur(radius / 4))
    bg = bg.resize(size, Image.Resampling.BILINEAR)
    if darken != 1.0:
        bg = ImageEnhance.Brightness(bg).enhance(darken)
    return bg


def letterbox(im: Image.Image, r: random.Random) -> Image.Image:
    """Padded to 16:9, 9:16 or 1:1 with black, white or blurred-photo bars (as apps do to
    post a photo uncropped); half of the time exported at 1080 px on the long side."""
    name, ratio = r.choice([("16:9", 16 / 9), ("9:16", 9 / 16), ("1:1", 1.0)])
    bars = r.choice(["black", "white", "blurred"])
    w, h = im.size
    if w / h < ratio:
        cw, ch = int(round(h * ratio)), h
    else:
        cw, ch = w, int(round(w / ratio))
    if bars == "blurred":
        canvas = _blurred_cover(im, (cw, ch), radius=max(cw, ch) / 25, darken=0.8)
    else:
        canvas = Image.new("RGB", (cw, ch), (0, 0, 0) if bars == "black" else (255, 255, 255))
    canvas.paste(im, ((cw - w) // 2, (ch - h) // 2))
    export = r.random() < 0.5
    if export:
        f = 1080 / max(cw, ch)
        canvas = canvas.resize((round(cw * f), round(ch * f)), Image.Resampling.LANCZOS)
    return _done(canvas, "letterbox", ratio=name, bars=bars, size=canvas.size,
                 photo_area=(w * h) / (cw * ch))


def padding(im: Image.Image, r: random.Random) -> Image.Image:
    """A uniform coloured border of 5-20 % (of the photo's mean side) on every side."""
    f = r.uniform(0.05, 0.2)
    kind = r.choice(["white", "black", "colour"])
    colour = {"white": (255, 255, 255), "black": (0, 0, 0)}.get(
        kind, tuple(r.randint(0, 255) for _ in range(3)))
    border = max(2, int(round(f * (im.width + im.height) / 2)))
    out = ImageOps.expand(im, border, fill=colour)
    return _done(out, "padding", border=f, colour=colour)


def story(im: Image.Image, r: random.Random) -> Image.Image:
    """A 1080x1920 story: blurred, darkened, enlarged copy behind; the photo centred at
    80-100 % of the width; text on it 60 % of the time."""
    cw, ch = 1080, 1920
    canvas = _blurred_cover(im, (cw, ch), radius=r.uniform(25, 45), darken=r.uniform(0.45, 0.75))
    scale = r.uniform(0.8, 1.0)
    pw = int(round(cw * scale))
    ph = int(round(pw * im.height / im.width))
    if ph > int(ch * 0.9):  # very tall photos: fit the height instead
        ph = int(ch * 0.9)
        pw = int(round(ph * im.width / im.height))
    y = (ch - ph) // 2 + int(r.uniform(-0.05, 0.05) * ch)
    y = max(0, min(ch - ph, y))
    canvas.paste(im.resize((pw, ph), Image.Resampling.LANCZOS), ((cw - pw) // 2, y))
    text = None
    if r.random() < 0.6:
        d = ImageDraw.Draw(canvas)
        text = _sentence(r, r.randint(2, 5))
        size = r.randint(48, 72)
        font = _font(size)
        tw = _text_width(d, text, font)
        while tw > cw - 80 and size > 24:
            size -= 4
            font = _font(size)
            tw = _text_width(d, text, font)
        ty = r.choice([int(ch * r.uniform(0.08, 0.18)), int(ch * r.uniform(0.78, 0.88))])
        tx = (cw - tw) // 2
        fill: tuple[int, int, int] = (255, 255, 255)
        if r.random() < 0.5:  # text on a highlight box, as story editors do
            box, fill = r.choice([((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255)),
                                  ((230, 30, 60), (255, 255, 255))])
            d.rounded_rectangle((tx - 20, ty - 12, tx + tw + 20, ty + size + 18), radius=16,
                                fill=box)
        d.text((tx, ty), text, fill=fill, font=font)
    return _done(canvas, "story", photo_width=scale, photo_box=((cw - pw) // 2, y, pw, ph),
                 text=bool(text))


def _heart(d: ImageDraw.ImageDraw, x: int, y: int, s: int, colour: Any, width: int) -> None:
    pts = []
    for i in range(40):
        t = 2 * math.pi * i / 40
        hx = 16 * math.sin(t) ** 3
        hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x + s / 2 + hx * s / 34, y + s / 2 - hy * s / 34))
    d.line(pts + [pts[0]], fill=colour, width=width, joint="curve")


def _bubble(d: ImageDraw.ImageDraw, x: int, y: int, s: int, colour: Any, width: int) -> None:
    d.ellipse((x, y, x + s, y + s * 0.9), outline=colour, width=width)
    d.line([(x + s * 0.2, y + s * 0.75), (x + s * 0.05, y + s), (x + s * 0.4, y + s * 0.86)],
           fill=colour, width=width)


def _share(d: ImageDraw.ImageDraw, x: int, y: int, s: int, colour: Any, width: int) -> None:
    d.polygon([(x, y + s * 0.45), (x + s, y), (x + s * 0.55, y + s)], outline=colour,
              width=width)
    d.line([(x + s, y), (x + s * 0.4, y + s * 0.55)], fill=colour, width=width)


def screenshot(im: Image.Image, r: random.Random) -> Image.Image:
    """A phone screenshot of a feed post: status and app bars, avatar, username, 1-3 lines of
    post text above the photo, like/comment/share icons with counts below, the next post
    starting and the tab bar; the feed is scrolled so the photo shows whole."""
    W, H = r.choice([(1080, 2340), (1170, 2532), (1080, 1920), (750, 1334), (1284, 2778)])
    u = W / 1080  # layout unit
    dark = r.random() < 0.35
    bg = (0, 0, 0) if dark else (255, 255, 255)
    fg = (245, 245, 245) if dark else (15, 20, 25)
    grey = (140, 140, 145)
    style = r.choice(["edge", "card"])  # edge-to-edge photo, or an indented rounded card
    # the feed as one tall strip, then a phone-sized window onto it
    lines = [_sentence(r, r.randint(5, 9)) for _ in range(r.randint(1, 3))]
    pad = int(36 * u)
    avatar = int(96 * u)
    text_size = int(40 * u)
    line_h = int(text_size * 1.35)
    if style == "edge":
        pw = W
        photo = im
        if im.width / im.height < 0.8:  # feeds show portraits at 4:5 at most
            photo = ImageOps.fit(im, (im.width, int(im.width / 0.8)))
        x0 = 0
    else:
        x0 = pad + avatar + int(24 * u)
        pw = W - x0 - pad
        photo = im
    ph = int(round(pw * photo.height / photo.width))
    header_h = pad + avatar + int(20 * u)
    y_text = header_h
    y_photo = y_text + len(lines) * line_h + int(24 * u)
    y_actions = y_photo + ph + int(28 * u)
    strip_h = y_actions + int(300 * u) + H  # room for the next post below
    strip = Image.new("RGB", (W, strip_h), bg)
    d = ImageDraw.Draw(strip)
    d.ellipse((pad, pad, pad + avatar, pad + avatar),
              fill=(r.randint(40, 230), r.randint(40, 230), r.randint(40, 230)))
    name_font, small = _font(int(38 * u)), _font(int(32 * u))
    handle = r.choice(HANDLES)
    d.text((pad + avatar + int(24 * u), pad + int(8 * u)), handle, fill=fg, font=name_font)
    d.text((pad + avatar + int(24 * u), pad + int(52 * u)),
           f"@{handle} · {r.randint(1, 23)}h", fill=grey, font=small)
    for k in range(3):
        d.ellipse((W - pad - int((12 + 22 * k) * u), pad + int(40 * u),
                   W - pad - int((4 + 22 * k) * u), pad + int(48 * u)), fill=fg)
    body = _font(text_size)
    tx = x0 if style == "card" else pad
    for i, line in enumerate(lines):
        d.text((tx, y_text + i * line_h), line, fill=fg, font=body)
    pic = photo.resize((pw, ph), Image.Resampling.LANCZOS)
    if style == "card":
        mask = Image.new("L", (pw, ph), 0)
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, pw - 1, ph - 1), radius=int(28 * u),
                                               fill=255)
        strip.paste(pic, (x0, y_photo), mask)
        d.rounded_rectangle((x0, y_photo, x0 + pw - 1, y_photo + ph - 1), radius=int(28 * u),
                            outline=(60, 60, 60) if dark else (220, 220, 220), width=2)
    else:
        strip.paste(pic, (0, y_photo))
    icon = int(56 * u)
    width = max(2, int(5 * u))
    counts = [f"{r.randint(1, 99)}.{r.randint(0, 9)}K", str(r.randint(12, 999)),
              f"{r.randint(1, 9)}.{r.randint(0, 9)}K"]
    ix = tx
    for draw_icon, count in zip((_heart, _bubble, _share), counts, strict=True):
        draw_icon(d, ix, y_actions, icon, fg, width)
        d.text((ix + icon + int(14 * u), y_actions + int(8 * u)), count, fill=fg, font=small)
        ix += int(260 * u)
    d.text((pad, y_actions + icon + int(30 * u)),
           f"Liked by {r.choice(HANDLES)} and {r.randint(2, 900)} others", fill=fg, font=small)
    ny = y_actions + icon + int(110 * u)  # the next post's header
    d.line((0, ny - int(20 * u), W, ny - int(20 * u)), fill=(40, 40, 40) if dark else
           (230, 230, 230), width=2)
    d.ellipse((pad, ny, pad + avatar, ny + avatar), fill=(r.randint(40, 230), 90, 160))
    d.text((pad + avatar + int(24 * u), ny + int(8 * u)), r.choice(HANDLES), fill=fg,
           font=name_font)
    d.text((pad, ny + avatar + int(24 * u)), _sentence(r, 7), fill=fg, font=body)
    # the phone window: status bar + app bar on top, tab bar at the bottom
    status_h, appbar_h, tab_h = int(0.025 * H), int(110 * u), int(0.065 * H)
    view_h = H - status_h - appbar_h - tab_h
    top_min = max(0, y_photo + ph - view_h)  # photo bottom still visible
    top_max = max(top_min, min(y_photo, strip_h - view_h))
    offset = r.randint(top_min, top_max) if r.random() < 0.7 else top_min
    window = strip.crop((0, offset, W, offset + view_h))
    canvas = Image.new("RGB", (W, H), bg)
    canvas.paste(window, (0, status_h + appbar_h))
    cd = ImageDraw.Draw(canvas)
    cd.text((int(60 * u), int(status_h * 0.15)), f"{r.randint(7, 23)}:{r.randint(0, 59):02d}",
            fill=fg, font=_font(int(status_h * 0.6)))
    cd.rectangle((W - int(120 * u), int(status_h * 0.3), W - int(60 * u),
                  int(status_h * 0.75)), outline=fg, width=2)
    cd.rectangle((W - int(116 * u), int(status_h * 0.3) + 4,
                  W - int(116 * u) + int(r.uniform(10, 50) * u), int(status_h * 0.75) - 4),
                 fill=fg)
    cd.rectangle((0, status_h, W, status_h + appbar_h), fill=bg)
    cd.text((pad, status_h + int(28 * u)), r.choice(["Feed", "Home", "For you", "Following"]),
            fill=fg, font=_font(int(54 * u)))
    cd.line((0, status_h + appbar_h - 1, W, status_h + appbar_h - 1),
            fill=(40, 40, 40) if dark else (225, 225, 225), width=2)
    ty = H - tab_h
    cd.rectangle((0, ty, W, H), fill=bg)
    cd.line((0, ty, W, ty), fill=(40, 40, 40) if dark else (225, 225, 225), width=2)
    for k in range(5):
        cx = int(W * (k + 0.5) / 5)
        s = int(30 * u)
        if k % 2:
            cd.ellipse((cx - s, ty + tab_h // 3 - s // 2, cx + s, ty + tab_h // 3 + s * 3 // 2),
                       outline=fg, width=width)
        else:
            cd.rounded_rectangle((cx - s, ty + tab_h // 3 - s // 2, cx + s,
                                  ty + tab_h // 3 + s * 3 // 2), radius=8, outline=fg,
                                 width=width)
    top_in_canvas = status_h + appbar_h + (y_photo - offset)
    visible = (max(top_in_canvas, status_h + appbar_h), min(top_in_canvas + ph, ty))
    return _done(canvas, "screenshot", phone=(W, H), style=style, dark=dark,
                 text_lines=len(lines), photo_width=pw / W,
                 photo_box=(x0, visible[0], x0 + pw, visible[1]),
                 photo_visible=(visible[1] - visible[0]) / ph,
                 photo_area=pw * max(0, visible[1] - visible[0]) / (W * H))


def caption_bar(im: Image.Image, r: random.Random) -> Image.Image:
    """Meme style: a white or black bar of 10-25 % of the height above or below, with text."""
    frac = r.uniform(0.10, 0.25)
    bar = max(12, int(round(im.height * frac)))
    colour, fg = r.choice([((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255))])
    where = r.choice(["above", "below"])
    canvas = Image.new("RGB", (im.width, im.height + bar), colour)
    canvas.paste(im, (0, bar if where == "above" else 0))
    d = ImageDraw.Draw(canvas)
    text = _sentence(r, r.randint(3, 8)).upper()
    n_lines = 2 if len(text) > 28 and bar > 50 else 1
    words = text.split()
    half = (len(words) + 1) // 2
    rows = [" ".join(words[:half]), " ".join(words[half:])] if n_lines == 2 else [text]
    size = int(bar / (n_lines * 1.5))
    font = _font(size)
    while max(_text_width(d, t, font) for t in rows) > im.width * 0.94 and size > 8:
        size -= 2
        font = _font(size)
    top = 0 if where == "above" else im.height
    y = top + (bar - n_lines * size * 1.25) / 2
    for t in rows:
        d.text(((im.width - _text_width(d, t, font)) / 2, y), t, fill=fg, font=font)
        y += size * 1.25
    return _done(canvas, "caption_bar", bar=frac, where=where, bar_colour=colour)


def watermark(im: Image.Image, r: random.Random) -> Image.Image:
    """Semi-transparent text: once in a corner, or tiled diagonally over the whole photo."""
    text = r.choice(["@newsfeed", "BREAKING", "© viralnow", "@worldnews24", "EXCLUSIVE",
                     "via @dailyclips", "NEWS 24/7"])
    mode = r.choice(["corner", "tiled"])
    w, h = im.size
    if mode == "corner":
        alpha = r.randint(120, 220)
        size = max(10, int(w * r.uniform(0.04, 0.08)))
        layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        font = _font(size)
        tw = _text_width(d, text, font)
        m = int(0.03 * w)
        corner = r.choice(["top-left", "top-right", "bottom-left", "bottom-right"])
        x = m if "left" in corner else w - tw - m
        y = m if "top" in corner else h - int(size * 1.4) - m
        d.text((x + 2, y + 2), text, fill=(0, 0, 0, alpha // 2), font=font)
        d.text((x, y), text, fill=(255, 255, 255, alpha), font=font)
        extra: dict[str, Any] = {"corner": corner}
    else:
        alpha = r.randint(50, 110)
        size = max(10, int(w * r.uniform(0.05, 0.09)))
        angle = r.uniform(20, 40)
        side = int(math.hypot(w, h)) + 2 * size
        big = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        d = ImageDraw.Draw(big)
        font = _font(size)
        row = ("   ".join([text] * (side // max(1, _text_width(d, text + "   ", font)) + 2)))
        step = int(size * r.uniform(2.5, 4.0))
        for k, y in enumerate(range(0, side, step)):
            d.text((-(k * size) % (size * 3) - size * 3, y), row, fill=(255, 255, 255, alpha),
                   font=font)
        big = big.rotate(angle, resample=Image.Resampling.BICUBIC)
        layer = big.crop(((side - w) // 2, (side - h) // 2, (side - w) // 2 + w,
                          (side - h) // 2 + h))
        extra = {"angle": angle}
    out = Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
    return _done(out, "watermark", text=text, mode=mode, alpha=alpha, size=size, **extra)


def heavy_grade(im: Image.Image, r: random.Random) -> Image.Image:
    """A heavy colour grade (film look, teal-and-orange, faded matte, crushed contrast):
    a tone curve per channel plus a desaturation or saturation push, far beyond a filter."""
    look = r.choice(["teal_orange", "faded", "crushed", "cross_process"])
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if look == "teal_orange":
        lum = arr.mean(axis=2, keepdims=True)
        shadows = np.array([0.0, 0.35, 0.45], dtype=np.float32)
        highs = np.array([1.0, 0.62, 0.3], dtype=np.float32)
        toned = lum * highs + (1 - lum) * shadows * lum * 2
        arr = 0.35 * arr + 0.65 * toned
    elif look == "faded":
        arr = 0.18 + 0.68 * arr  # lifted blacks, dimmed whites
        arr = arr.mean(axis=2, keepdims=True) * 0.5 + arr * 0.5
    elif look == "crushed":
        arr = np.clip((arr - 0.5) * r.uniform(1.8, 2.4) + 0.5, 0, 1)
    else:
        arr = np.stack([arr[..., 0] ** 0.6, arr[..., 1] ** 1.1, arr[..., 2] ** 1.7], axis=2)
    out = Image.fromarray(np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    return _done(out, "heavy_grade", look=look)


def screen_photo(im: Image.Image, r: random.Random) -> Image.Image:
    """A phone photo of the picture shown on a monitor or TV: perspective (the screen is not
    facing the camera), a dark bezel and room around it, screen glow and gamma, slight blur
    and sensor noise."""
    w, h = im.width, im.height
    screen = ImageEnhance.Brightness(im).enhance(r.uniform(0.85, 1.15))
    screen = screen.point([min(255, int(255 * (v / 255) ** r.uniform(0.8, 1.2)))
                           for v in range(256)] * 3)
    margin = r.uniform(0.12, 0.25)
    cw, ch = int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))
    canvas = Image.new("RGB", (cw, ch), tuple(r.randint(10, 60) for _ in range(3)))
    bezel = int(min(w, h) * 0.03)
    x0, y0 = int(w * margin), int(h * margin)
    ImageDraw.Draw(canvas).rectangle((x0 - bezel, y0 - bezel, x0 + w + bezel, y0 + h + bezel),
                                     fill=(8, 8, 8))
    canvas.paste(screen, (x0, y0))
    j = r.uniform(0.03, 0.08)  # corner displacement as a share of the photo's size

    def jit() -> tuple[float, float]:
        return r.uniform(-j, j) * w, r.uniform(-j, j) * h

    src = [(0.0, 0.0), (cw, 0.0), (cw, ch), (0.0, ch)]
    dst = [(x + dx, y + dy) for (x, y), (dx, dy) in zip(src, [jit() for _ in range(4)],
                                                          strict=True)]
    coeffs = _perspective_coeffs(dst, src)
    warped = canvas.transform((cw, ch), Image.Transform.PERSPECTIVE, coeffs,
                              Image.Resampling.BICUBIC)
    warped = warped.filter(ImageFilter.GaussianBlur(r.uniform(0.6, 1.4)))
    arr = np.asarray(warped, dtype=np.float32)
    arr += np.random.default_rng(r.randrange(2**32)).normal(0, r.uniform(3, 8), arr.shape)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return _done(out, "screen_photo", corner_jitter=j, margin=margin)


def _perspective_coeffs(dst: Sequence[tuple[float, float]], src: Sequence[tuple[float, float]]
                        ) -> tuple[float, ...]:
    """PIL's 8 perspective coefficients mapping output points `dst` to input points `src`."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=np.float64)
    b = np.array([c for pt in src for c in pt], dtype=np.float64)
    return tuple(float(v) for v in np.linalg.solve(a, b))


def screenshot_of_screenshot(im: Image.Image, r: random.Random) -> Image.Image:
    """A screenshot of a feed post that itself shows a screenshot of the photo (reposted
    from another app): the photo ends up small, twice framed and twice re-encoded."""
    first = screenshot(im, r)
    size = first.size
    first = Image.open(io.BytesIO(encode_jpeg(first, r.randint(70, 90)))).convert("RGB")
    second = screenshot(first, r)
    return _done(second, "screenshot_of_screenshot", inner=size, outer=second.size)


def make_collage(pool: Sequence[Image.Image]) -> Edit:
    """The photo as one tile of a 2x2 or 3x3 grid (1080 px square, cells crop-to-fill as
    collage apps do, optional gutters); the other tiles are photos from `pool`."""

    def collage(im: Image.Image, r: random.Random) -> Image.Image:
        n = r.choice([2, 3])
        if len(pool) < n * n - 1:
            raise ValueError(f"collage needs a pool of at least {n * n - 1} other photos "
                             "(build_edits(pool=...) or set_pool(...))")
        side = 1080
        gap = r.choice([0, 0, 6, 12])
        gap_colour = r.choice([(255, 255, 255), (0, 0, 0)])
        cell = (side - gap * (n + 1)) // n
        canvas = Image.new("RGB", (side, side), gap_colour)
        slot = r.randrange(n * n)
        others = r.sample(range(len(pool)), n * n - 1)
        k = 0
        for i in range(n * n):
            if i == slot:
                tile = im
            else:
                tile = pool[others[k]]
                k += 1
            fitted = ImageOps.fit(tile, (cell, cell), Image.Resampling.LANCZOS)
            canvas.paste(fitted, (gap + (i % n) * (cell + gap), gap + (i // n) * (cell + gap)))
        kept = min(im.width, im.height) ** 2 / (im.width * im.height)
        return _done(canvas, "collage", grid=f"{n}x{n}", slot=slot, gap=gap,
                     photo_kept=kept, photo_area=cell * cell / (side * side))

    return collage


# -- the registry -------------------------------------------------------------------------------

#: edits a chain draws from, by pipeline stage (a repost crops before it captions, and the
#: platform's compression comes last)
CHAIN_STAGES: dict[str, int] = {
    "crop_90": 0, "crop_75": 0, "small_rotation": 0, "mirror": 0,
    "blur": 1, "noise": 1, "grayscale": 1, "colour_filter": 1, "gamma": 1,
    "brightness_contrast": 1,
    "letterbox": 2, "padding": 2, "caption_bar": 2, "watermark": 2,
    "thumbnail": 3, "jpeg": 3,
}


def build_edits(pool: Sequence[Image.Image]) -> dict[str, Edit]:
    """All edits, in benchmark order; `collage` takes its other tiles from `pool`."""
    registry: dict[str, Edit] = {
        "jpeg": jpeg, "thumbnail": thumbnail, "blur": blur, "noise": noise,
        "grayscale": grayscale, "colour_filter": colour_filter, "gamma": gamma,
        "brightness_contrast": brightness_contrast, "mirror": mirror, "rotate90": rotate90,
        "small_rotation": small_rotation,
        "crop_90": crop(0.90), "crop_75": crop(0.75), "crop_60": crop(0.60),
        "crop_40": crop(0.40),
        "letterbox": letterbox, "padding": padding, "story": story, "screenshot": screenshot,
        "caption_bar": caption_bar, "watermark": watermark, "collage": make_collage(pool),
        "heavy_grade": heavy_grade, "screen_photo": screen_photo,
        "screenshot_of_screenshot": screenshot_of_screenshot,
    }

    def chain3(im: Image.Image, r: random.Random) -> Image.Image:
        """Three different edits from CHAIN_STAGES, applied in pipeline order."""
        names = sorted(r.sample(sorted(CHAIN_STAGES), 3), key=lambda n: CHAIN_STAGES[n])
        steps: list[tuple[str, dict[str, Any]]] = []
        jpeg_bytes = None
        for name in names:
            im = registry[name](im, r)
            steps += params(im)
            jpeg_bytes = im.info.get("query_jpeg")
        im.info = {"edits": steps}  # type: ignore[dict-item]
        if jpeg_bytes is not None and steps[-1][0] == "jpeg":
            im.info["query_jpeg"] = jpeg_bytes
        return im

    registry["chain3"] = chain3
    return registry


_POOL: list[Image.Image] = []
EDITS: dict[str, Edit] = build_edits(_POOL)


def set_pool(images: Sequence[Image.Image]) -> None:
    """Photos (not archived) that `EDITS['collage']` fills its other tiles with."""
    _POOL[:] = list(images)


__all__ = ["EDITS", "CHAIN_STAGES", "Edit", "build_edits", "describe", "encode_jpeg", "params",
           "query_bytes", "set_pool"]
