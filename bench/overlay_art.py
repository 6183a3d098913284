"""Procedurally drawn overlays that news imagery shares across unrelated photos: channel bugs
(round logos in a corner), tickers / lower thirds, semi-transparent agency watermarks and
page badges. Two designs of each kind ("channels" A and B), drawn with Pillow only (default
font), so the benches need no downloads.

Each overlay is drawn the same way on every photo (size relative to the photo's short side),
like a broadcaster's or a page's mark; tickers carry a fixed channel block plus a headline that
varies with `seed`, as real tickers do.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont

Overlay = Callable[[Image.Image, int], Image.Image]


def _font(size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(8, int(size)))
    except TypeError:  # pragma: no cover - Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def round_logo(size: int, design: str = "A") -> Image.Image:
    """A round channel/page logo (RGBA, `size` pixels square): rings, spokes and letters."""
    s = size * 4  # drawn large, then reduced: smooth edges as a real logo would have
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    if design == "A":
        d.ellipse((0, 0, s - 1, s - 1), fill=(200, 20, 30, 255))
        d.ellipse((s * 0.1, s * 0.1, s * 0.9, s * 0.9), fill=(255, 255, 255, 255))
        d.ellipse((s * 0.18, s * 0.18, s * 0.82, s * 0.82), fill=(20, 40, 120, 255))
        for k in range(8):
            a = k * math.pi / 4
            d.line((s / 2, s / 2, s / 2 + math.cos(a) * s * 0.3, s / 2 + math.sin(a) * s * 0.3),
                   fill=(255, 210, 0, 255), width=max(2, s // 40))
        text, colour = "N24", (255, 255, 255, 255)
    else:
        d.ellipse((0, 0, s - 1, s - 1), fill=(10, 10, 10, 255))
        d.ellipse((s * 0.06, s * 0.06, s * 0.94, s * 0.94), outline=(240, 240, 240, 255),
                  width=max(3, s // 30))
        d.polygon([(s * 0.5, s * 0.14), (s * 0.86, s * 0.74), (s * 0.14, s * 0.74)],
                  fill=(0, 160, 220, 255))
        text, colour = "WTV", (255, 255, 0, 255)
    font = _font(s * 0.28)
    box = d.textbbox((0, 0), text, font=font)
    d.text(((s - (box[2] - box[0])) / 2 - box[0], (s - (box[3] - box[1])) / 2 - box[1]), text,
           font=font, fill=colour)
    return im.resize((size, size), Image.Resampling.LANCZOS)


def corner_bug(design: str, corner: str, rel: float = 0.2) -> Overlay:
    def apply(photo: Image.Image, seed: int) -> Image.Image:
        out = photo.convert("RGB").copy()
        side = max(24, int(min(out.size) * rel))
        logo = round_logo(side, design)
        m = max(4, int(min(out.size) * 0.03))
        x = out.width - side - m if "r" in corner else m
        y = out.height - side - m if "b" in corner else m
        out.paste(logo, (x, y), logo)
        return out
    return apply


HEADLINES = ("storm hits coast thousands evacuated", "minister resigns after vote",
             "markets fall on rate fears", "rescue teams reach flooded villages",
             "protest enters third day", "border crossing reopens", "fire spreads near city",
             "talks resume in capital", "army says convoy attacked", "power cut across region")


def ticker(design: str) -> Overlay:
    def apply(photo: Image.Image, seed: int) -> Image.Image:
        out = photo.convert("RGB").copy()
        w, h = out.size
        bar = max(16, int(h * 0.11))
        d = ImageDraw.Draw(out)
        y0 = h - bar
        base, block, label = (((150, 0, 0), (255, 255, 255), "NEWS 24") if design == "A"
                              else ((10, 30, 80), (255, 200, 0), "WORLD TV"))
        d.rectangle((0, y0, w, h), fill=base)
        font = _font(bar * 0.5)
        bw = int(w * 0.24)
        d.rectangle((0, y0, bw, h), fill=block)
        d.text((bw * 0.08, y0 + bar * 0.22), label, font=font,
               fill=base if design == "A" else (10, 30, 80))
        text = random.Random(seed).choice(HEADLINES).upper()
        d.text((bw + bar * 0.3, y0 + bar * 0.22), text, font=font, fill=(255, 255, 255))
        return out
    return apply


def watermark(design: str) -> Overlay:
    """A semi-transparent agency watermark across the middle of the photo."""
    def apply(photo: Image.Image, seed: int) -> Image.Image:
        out = photo.convert("RGBA")
        w, h = out.size
        layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        text = "AGENCY PHOTO" if design == "A" else "© PRESSWIRE"
        font = _font(min(w, h) * 0.13)
        box = d.textbbox((0, 0), text, font=font)
        tw, th = box[2] - box[0], box[3] - box[1]
        d.text(((w - tw) / 2 - box[0], (h - th) / 2 - box[1]), text, font=font,
               fill=(255, 255, 255, 110), stroke_width=max(1, int(min(w, h) * 0.004)),
               stroke_fill=(0, 0, 0, 90))
        if design == "B":
            layer = layer.rotate(25, resample=Image.Resampling.BICUBIC)
        return Image.alpha_composite(out, layer).convert("RGB")
    return apply


def badge(design: str) -> Overlay:
    """A page badge ("BREAKING", "LIVE") in the top-left corner."""
    def apply(photo: Image.Image, seed: int) -> Image.Image:
        out = photo.convert("RGB").copy()
        s = min(out.size)
        d = ImageDraw.Draw(out)
        text, fill, ink = (("BREAKING", (220, 0, 0), (255, 255, 255)) if design == "A"
                           else ("LIVE", (255, 255, 255), (200, 0, 0)))
        font = _font(s * 0.07)
        box = d.textbbox((0, 0), text, font=font)
        pad = s * 0.025
        x0, y0 = s * 0.04, s * 0.04
        x1, y1 = x0 + box[2] - box[0] + 2 * pad, y0 + box[3] - box[1] + 2 * pad
        d.rounded_rectangle((x0, y0, x1, y1), radius=int(pad), fill=fill)
        if design == "B":
            r = (y1 - y0) * 0.22
            cy = (y0 + y1) / 2
            d.ellipse((x1 + pad, cy - r, x1 + pad + 2 * r, cy + r), fill=(200, 0, 0))
        d.text((x0 + pad - box[0], y0 + pad - box[1]), text, font=font, fill=ink)
        return out
    return apply


OVERLAYS: dict[str, Overlay] = {
    "bug_a": corner_bug("A", "tr"), "bug_b": corner_bug("B", "bl"),
    "ticker_a": ticker("A"), "ticker_b": ticker("B"),
    "watermark_a": watermark("A"), "watermark_b": watermark("B"),
    "badge_a": badge("A"), "badge_b": badge("B"),
}
