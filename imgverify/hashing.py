"""Perceptual hashes of one picture: PDQ (Meta) and pHash/dHash/wHash (imagehash), one decode.

A `HashSet` is a small value object: 256-bit PDQ with its quality and three 64-bit hashes,
all kept as Python ints (hex for people, uint64 words for the index). PDQ's eight
rotation/flip variants come from its DCT (pdqhash.compute_dihedral), so they cost almost
nothing; the 64-bit families are computed on demand for the one orientation a candidate needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
import pdqhash
from PIL import Image

ALGORITHMS = ("pdq", "phash", "dhash", "whash")
BITS = {"pdq": 256, "phash": 64, "dhash": 64, "whash": 64}

#: Dihedral variants in pdqhash's order. Variant k of a picture is the hash of T_k(picture).
DIHEDRAL_NAMES = (
    "original",
    "rotate90",  # 90 degrees counter-clockwise
    "rotate180",
    "rotate270",  # 90 degrees clockwise
    "flipx",  # mirrored top to bottom
    "flipy",  # mirrored left to right
    "flipplus1",  # transposed
    "flipminus1",  # anti-transposed
)
DIHEDRAL_TRANSPOSE: tuple[Image.Transpose | None, ...] = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
#: Index of the inverse transform of each variant.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
#: How a query relates to its reference when the query's variant k matched the reference.
EDIT_DESCRIPTION = {
    0: None,
    1: "rotated 90° clockwise",
    2: "rotated 180°",
    3: "rotated 90° counter-clockwise",
    4: "flipped upside down",
    5: "mirrored",
    6: "transposed (mirrored and rotated 90°)",
    7: "anti-transposed (mirrored and rotated 90°)",
}

#: Fixed wavelet-hash working size, so a resized copy hashes at the same scale as its original.
WHASH_SCALE = 64


def pdq_bits_to_int(bits: np.ndarray) -> int:
    """pdqhash returns bits most significant first; this is Meta's hex encoding as an int."""
    packed = np.packbits(np.asarray(bits, dtype=np.uint8))
    return int.from_bytes(packed.tobytes(), "big")


def imagehash_to_int(h: imagehash.ImageHash) -> int:
    return int(str(h), 16)


def hex_of(value: int, bits: int) -> str:
    return format(value, f"0{bits // 4}x")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class HashSet:
    """All hashes of one picture in one orientation."""

    pdq: int
    pdq_quality: int
    phash: int
    dhash: int
    whash: int

    def get(self, algorithm: str) -> int:
        return int(getattr(self, algorithm))

    def distances(self, other: HashSet) -> dict[str, int]:
        return {a: hamming(self.get(a), other.get(a)) for a in ALGORITHMS}

    def to_hex(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {}
        for a in ALGORITHMS:
            out[a] = hex_of(self.get(a), BITS[a])
            if a == "pdq":
                out["pdq_quality"] = self.pdq_quality
        return out

    @classmethod
    def from_hex(cls, values: dict[str, str | int]) -> HashSet:
        return cls(
            pdq=int(str(values["pdq"]), 16),
            pdq_quality=int(values.get("pdq_quality", 100)),
            phash=int(str(values["phash"]), 16),
            dhash=int(str(values["dhash"]), 16),
            whash=int(str(values["whash"]), 16),
        )


def pdq_of_array(rgb: np.ndarray) -> tuple[int, int]:
    bits, quality = pdqhash.compute(rgb)
    return pdq_bits_to_int(bits), int(quality)


def pdq_dihedral(rgb: np.ndarray) -> tuple[list[int], int]:
    """The 8 PDQ variants (pdqhash order) from one DCT, and the quality."""
    hashes, quality = pdqhash.compute_dihedral(rgb)
    return [pdq_bits_to_int(h) for h in hashes], int(quality)


def small_hashes(gray: Image.Image) -> tuple[int, int, int]:
    """pHash, dHash, wHash of a grayscale picture (imagehash, the reference implementation)."""
    return (
        imagehash_to_int(imagehash.phash(gray)),
        imagehash_to_int(imagehash.dhash(gray)),
        imagehash_to_int(imagehash.whash(gray, image_scale=WHASH_SCALE)),
    )


def _gray_for_small_hashes(rgb: Image.Image) -> Image.Image:
    """A 128 px grey copy: the 64-bit hashes resize to 32/9/64 px anyway, so this is exact
    enough and makes re-hashing under another orientation nearly free."""
    gray = rgb.convert("L")
    if max(gray.size) > 256:
        gray = gray.resize((128, 128), Image.Resampling.BOX, reducing_gap=None)
    return gray


class PictureHasher:
    """Hashes one decoded picture; keeps the intermediate products that variants reuse."""

    def __init__(self, rgb: Image.Image) -> None:
        self.rgb = rgb if rgb.mode == "RGB" else rgb.convert("RGB")
        self._array = np.asarray(self.rgb)
        self._gray = _gray_for_small_hashes(self.rgb)
        self._pdq_variants: list[int] | None = None
        self._quality = 0
        self._small: dict[int, tuple[int, int, int]] = {}
        self._phash: dict[int, int] = {}

    @property
    def pdq_variants(self) -> list[int]:
        if self._pdq_variants is None:
            self._pdq_variants, self._quality = pdq_dihedral(self._array)
        return self._pdq_variants

    @property
    def quality(self) -> int:
        _ = self.pdq_variants
        return self._quality

    def _oriented_gray(self, variant: int) -> Image.Image:
        op = DIHEDRAL_TRANSPOSE[variant]
        return self._gray if op is None else self._gray.transpose(op)

    def small(self, variant: int = 0) -> tuple[int, int, int]:
        if variant not in self._small:
            self._small[variant] = small_hashes(self._oriented_gray(variant))
            self._phash[variant] = self._small[variant][0]
        return self._small[variant]

    def phash(self, variant: int = 0) -> int:
        """pHash alone (the index's second key), without the dearer wavelet hash."""
        if variant not in self._phash:
            self._phash[variant] = imagehash_to_int(imagehash.phash(self._oriented_gray(variant)))
        return self._phash[variant]

    def hashset(self, variant: int = 0) -> HashSet:
        p, d, w = self.small(variant)
        return HashSet(self.pdq_variants[variant], self.quality, p, d, w)


def compute_hashes(rgb: Image.Image) -> HashSet:
    """The default hash set of a picture, in its own orientation."""
    return PictureHasher(rgb).hashset(0)


def trim_uniform_borders(rgb: Image.Image, tolerance: float = 10.0,
                         min_fraction: float = 0.02) -> tuple[int, int, int, int] | None:
    """Bounding box of the picture inside flat borders (letterbox, padding, frames).

    Returns None when there is nothing worth trimming. A border line is one whose pixels all
    stay within `tolerance` of the corner colour; at least `min_fraction` of a side must go.
    """
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
    removed_h = (top + (h - bottom)) / h
    removed_w = (left + (w - right)) / w
    if max(removed_h, removed_w) < min_fraction:
        return None
    if (bottom - top) < 0.2 * h or (right - left) < 0.2 * w:
        return None  # a mostly flat picture, not a framed photo
    return (left, top, right, bottom)
