"""Which parts of a picture get hashed: the whole frame and, when found, the photo inside it.

Reposts add flat borders (letterboxing, padding, frames). Hashing the trimmed picture as well
as the full one lets a padded copy match its original and vice versa.
"""

from __future__ import annotations

from PIL import Image

from .hashing import trim_uniform_borders


def picture_variants(rgb: Image.Image) -> list[tuple[str, Image.Image]]:
    """[("full", picture)] plus ("trimmed", the photo inside flat borders) when there is one."""
    variants = [("full", rgb)]
    box = trim_uniform_borders(rgb)
    if box is not None:
        variants.append(("trimmed", rgb.crop(box)))
    return variants
