"""Perceptual hashes of one picture: PDQ (Meta) and pHash/dHash/wHash (imagehash), one decode.

A `HashSet` is a small value object: 256-bit PDQ with its quality and three 64-bit hashes,
all kept as Python ints (hex for people, uint64 words for the index). PDQ's eight
rotation/flip variants come from sign flips and a transpose of its DCT, so they cost almost
nothing; the 64-bit families are computed on demand for the one orientation a candidate needs.

PDQ of a reduced decode. PDQ blurs the luma with two box passes whose width depends on the
picture's size (about size/128), then samples a 64 x 64 grid. Run on a 1/8-scale decode the
box is 8x narrower, so the hash drifts up to 16 bits from the full-resolution hash. Here PDQ
is written in numpy as the linear map it is (`64 x H` and `64 x W` matrices around the luma,
then the 16 x 16 DCT): for a reduced picture the matrices are the full-resolution ones summed
over the block of original pixels that each reduced pixel averages (exact for JPEG 1/8 DC
decoding and box reductions). The result is within a few bits of Meta's full-resolution
hash at the cost of the reduced decode; at scale 1 it is bit-exact with pdqhash (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import imagehash
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from imgverify.media.load import LoadedImage

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

#: Version of how stored hashes are computed; archives record it, so hashes made by different
#: pipelines are never compared. 1: pdqhash run on the reduced decode (imgverify 0.1).
#: 2: PDQ of the reduced decode with full-resolution filtering (this module's docstring).
HASH_PIPELINE = 2

#: Fixed wavelet-hash working size, so a resized copy hashes at the same scale as its original.
WHASH_SCALE = 64


def pdq_bits_to_int(bits: np.ndarray) -> int:
    """pdqhash returns bits most significant first; this is Meta's hex encoding as an int."""
    packed = np.packbits(np.asarray(bits, dtype=np.uint8))
    return int.from_bytes(packed.tobytes(), "big")


def imagehash_to_int(h: imagehash.ImageHash) -> int:
    """The hash's bits, first bit most significant (the value of its hex string), without
    imagehash's per-bit string building."""
    bits = np.asarray(h.hash, dtype=bool).ravel()
    packed = np.packbits(bits)
    return int.from_bytes(packed.tobytes(), "big") >> (8 * packed.size - bits.size)


def phash_of_gray(gray: Image.Image) -> int:
    """`imagehash.phash(gray)` as an int, bit for bit: the same resize, DCT and median."""
    return _phash_of_pixels(np.asarray(gray.convert("L").resize((32, 32), imagehash.ANTIALIAS)))


def _phash_of_pixels(pixels: np.ndarray) -> int:
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    low = dct[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


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
    """Meta's pdqhash on the pixels as given (a cross-check: `pdq_hash` gives the same)."""
    import pdqhash  # only benchmarks and tests call it; the hash paths are numpy

    bits, quality = pdqhash.compute(rgb)
    return pdq_bits_to_int(bits), int(quality)


#: PDQ's 16 x 64 DCT basis (DC left out, as in Meta's dct64To16).
_PDQ_DCT = (np.sqrt(2 / 64) * np.cos(np.pi / 128 * np.arange(1, 17)[:, None]
                                     * (2 * np.arange(64)[None, :] + 1))).astype(np.float32)
#: (-1)^(u) for the DCT rows u = 1..16: mirroring the 64-sample grid flips these signs.
_PDQ_ALT = np.where(np.arange(1, 17) % 2 == 1, -1.0, 1.0).astype(np.float32)
#: pdqhash's luma weights, as the Python floats its binding multiplies by.
_LUMA_F64 = (0.299, 0.587, 0.114)
#: Pixels per band of the luma conversion: the float64 temporaries stay in cache.
_LUMA_BAND = 1 << 16


def _pdq_full_operator(n: int) -> np.ndarray:
    """64 x n weights: PDQ's two box passes along one axis of length n, then its decimation.

    Mirrors Meta's box1DFloat (window (n + 127) // 128, edges renormalised) and decimateFloat.
    """
    w = (n + 2 * 64 - 1) // (2 * 64)
    half = (w + 2) // 2
    pos = np.arange(n)
    lo = np.maximum(pos - (w - half), 0)
    hi = np.minimum(pos + half - 1, n - 1)
    inv = 1.0 / (hi - lo + 1)
    sample = ((np.arange(64) + 0.5) * n / 64).astype(np.int64)
    rows = np.repeat(np.arange(64), w)
    # first pass: sample i averages positions mid[i]; second pass spreads each of them
    mids = (lo[sample][:, None] + np.arange(w)[None, :])
    valid = mids <= hi[sample][:, None]
    mids = np.minimum(mids, n - 1)
    weight = np.where(valid, inv[sample][:, None] * inv[mids], 0.0).ravel()
    diff = np.zeros((64, n + 1))
    np.add.at(diff, (rows, lo[mids].ravel()), weight)
    np.add.at(diff, (rows, hi[mids].ravel() + 1), -weight)
    return np.cumsum(diff[:, :n], axis=1)


@lru_cache(maxsize=256)
def _pdq_operator(n_full: int, n: int) -> np.ndarray:
    """64 x n weights for a reduced axis of n pixels that stands for n_full original pixels.

    Cached (shared read-only between threads): picture sizes repeat, and each entry is at
    most a few hundred KB because n is the reduced size.
    """
    full = _pdq_full_operator(n_full)
    if n_full == n:
        out = full.astype(np.float32)
    else:
        cum = np.concatenate([np.zeros((64, 1)), np.cumsum(full, axis=1)], axis=1)
        factor = max(1, round(n_full / n))
        if -(-n_full // factor) == n:  # JPEG DCT scaling and Image.reduce: blocks of `factor`
            edges = np.minimum(np.arange(n + 1) * factor, n_full)
        else:
            edges = np.round(np.arange(n + 1) * n_full / n).astype(np.int64)
        out = (cum[:, edges[1:]] - cum[:, edges[:-1]]).astype(np.float32)
    out.setflags(write=False)
    return out


#: Original pixels per pixel of a reduced decode, (across, down); (1, 1) for a full decode.
Scale = tuple[float, float]
FULL_SCALE: Scale = (1.0, 1.0)


def _pdq_luma(rgb: np.ndarray) -> np.ndarray:
    """The luma pdqhash hashes, to the bit: its binding computes `R*0.299 + G*0.587 + B*0.114`
    in float64 numpy and casts to float32 (a float32 formula, or a BLAS dot product, rounds
    differently on up to a third of all colours and flips bits of low-quality pictures). Done
    the same way here, a band of rows at a time, so no float64 copy of the whole picture."""
    h, w = rgb.shape[:2]
    luma = np.empty((h, w), dtype=np.float32)
    step = max(1, _LUMA_BAND // max(w, 1))
    r, g, b = _LUMA_F64
    for top in range(0, h, step):
        band = rgb[top:top + step]
        acc = np.multiply(band[..., 0], r)
        acc += np.multiply(band[..., 1], g)
        acc += np.multiply(band[..., 2], b)
        luma[top:top + step] = acc
    return luma


def pdq_grid(rgb: np.ndarray, scale: Scale = FULL_SCALE) -> np.ndarray:
    """PDQ's 64 x 64 filtered luma grid of a picture that is `scale` times smaller than the
    one it stands for ((1, 1): the picture itself, exactly as pdqhash computes it)."""
    h, w = rgb.shape[:2]
    luma = _pdq_luma(rgb) if rgb.ndim == 3 else rgb.astype(np.float32)
    n_rows, n_cols = max(h, round(h * scale[1])), max(w, round(w * scale[0]))
    rows, cols = _pdq_operator(n_rows, h), _pdq_operator(n_cols, w)
    # each of the 64 rows of an operator is non-zero on about n/64 lines only: a dense product
    # would do 64x the work, and a threaded BLAS waits for its sleeping threads on busy cores
    first = np.empty((64, w), dtype=np.float32)
    for i, (lo, hi) in enumerate(_pdq_support(n_rows, h)):
        np.dot(rows[i, lo:hi], luma[lo:hi], out=first[i])
    grid = np.empty((64, 64), dtype=np.float32)
    for j, (lo, hi) in enumerate(_pdq_support(n_cols, w)):
        grid[:, j] = first[:, lo:hi] @ cols[j, lo:hi]
    return grid


@lru_cache(maxsize=256)
def _pdq_support(n_full: int, n: int) -> tuple[tuple[int, int], ...]:
    """Per operator row, the span of lines it weighs (the cumulative sums leave ~1e-18
    residues elsewhere, which are left out)."""
    op = np.abs(_pdq_operator(n_full, n))
    keep = op > op.max(axis=1, keepdims=True) * 1e-6
    return tuple((int(np.argmax(k)), n - int(np.argmax(k[::-1]))) for k in keep)


def pdq_quality(grid: np.ndarray) -> int:
    """Meta's gradient-sum quality (0-100) of the 64 x 64 grid."""
    dv = np.trunc((grid[:-1] - grid[1:]) * 100 / 255)
    dh = np.trunc((grid[:, :-1] - grid[:, 1:]) * 100 / 255)
    return min(100, int((np.abs(dv).sum() + np.abs(dh).sum()) // 90))


def _pdq_bits(coefficients: np.ndarray) -> int:
    flat = coefficients.ravel()
    median = np.partition(flat, 127)[127]  # Meta's torben median: the lower middle value
    return pdq_bits_to_int((flat > median)[::-1])


def pdq_hash(rgb: np.ndarray, scale: Scale = FULL_SCALE) -> tuple[int, int]:
    """PDQ and its quality in the picture's own orientation.

    At scale 1 this is Meta's pdqhash bit for bit (hash and quality, tested on every
    conformance image) at a fraction of its cost: the two box passes and the decimation are
    one `64 x H` and one `64 x W` matrix product (BLAS), not per-pixel running sums.
    """
    grid = pdq_grid(rgb, scale).astype(np.float32)
    return _pdq_bits(_PDQ_DCT @ grid @ _PDQ_DCT.T), pdq_quality(grid)


def pdq_dihedral(rgb: np.ndarray, scale: Scale = FULL_SCALE) -> tuple[list[int], int]:
    """The 8 PDQ variants (pdqhash order, `DIHEDRAL_NAMES`) and the quality.

    `scale` is how many original pixels each pixel of `rgb` stands for; with it the hash
    approximates the full-resolution one (see the module docstring).
    """
    grid = pdq_grid(rgb, scale).astype(np.float32)
    c = _PDQ_DCT @ grid @ _PDQ_DCT.T  # rows: vertical frequency, columns: horizontal
    flip_rows = _PDQ_ALT[:, None] * c  # picture mirrored top to bottom
    flip_cols = c * _PDQ_ALT[None, :]  # mirrored left to right
    both = flip_rows * _PDQ_ALT[None, :]  # rotated 180
    variants = (c, flip_cols.T, both, flip_rows.T, flip_rows, flip_cols, c.T, both.T)
    return [_pdq_bits(v) for v in variants], pdq_quality(grid)


def small_hashes(gray: Image.Image) -> tuple[int, int, int]:
    """pHash, dHash, wHash of a grayscale picture (imagehash, the reference implementation)."""
    return (
        phash_of_gray(gray),
        imagehash_to_int(imagehash.dhash(gray)),
        imagehash_to_int(imagehash.whash(gray, image_scale=WHASH_SCALE)),
    )


def whash_default(gray: Image.Image) -> int:
    """`imagehash.whash(gray)` with its default arguments, bit for bit, without the wavelets.

    With the Haar wavelet the low band that whash thresholds is, exactly, each 1/8 x 1/8
    block's pixel sum of the resized picture, scaled and shifted by the same constants for all
    blocks, so the bits are "block sum above the median block sum". The sums are integers here;
    pywt's values differ from the exact ones by rounding far below the gap between two distinct
    sums, so the split is the same unless the two middle sums are equal: then the result
    depends on pywt's rounding and imagehash itself is run.
    """
    # the same scale, mode and resampling as imagehash.whash, so the resized pixels are the same
    scale = max(2 ** int(np.log2(min(gray.size))), 8)
    if scale < 16:
        return imagehash_to_int(imagehash.whash(gray))
    small = gray.convert("L").resize((scale, scale), imagehash.ANTIALIAS)
    block = scale // 8
    sums = np.asarray(small, dtype=np.int64).reshape(8, block, 8, block).sum(axis=(1, 3))
    ordered = np.sort(sums.ravel())
    if ordered[31] == ordered[32]:
        return imagehash_to_int(imagehash.whash(gray))
    return imagehash_to_int(imagehash.ImageHash(sums > ordered[31]))


_SMALL_SIDE = 128
#: Each DIHEDRAL_TRANSPOSE variant as (from the transposed picture?, (row step, column
#: step)): ROTATE_90 is the transpose upside down, ROTATE_270 the transpose mirrored, ...
_DIHEDRAL_FROM_TRANSPOSE: tuple[tuple[bool, tuple[int, int]], ...] = (
    (False, (1, 1)), (True, (-1, 1)), (False, (-1, -1)), (True, (1, -1)),
    (False, (-1, 1)), (False, (1, -1)), (True, (1, 1)), (True, (-1, -1)),
)


def _gray_for_small_hashes(rgb: Image.Image) -> Image.Image:
    """A 128 px grey copy: the 64-bit hashes resize to 32/9/64 px anyway, so this is exact
    enough and makes re-hashing under another orientation nearly free."""
    gray = rgb.convert("L")
    if max(gray.size) > 256:
        gray = gray.resize((_SMALL_SIDE, _SMALL_SIDE), Image.Resampling.BOX, reducing_gap=None)
    return gray


class PictureHasher:
    """Hashes one decoded picture; keeps the intermediate products that variants reuse."""

    def __init__(self, rgb: Image.Image, scale: Scale = FULL_SCALE) -> None:
        """`scale`: original pixels per pixel of `rgb` when it is a reduced decode."""
        self.rgb = rgb if rgb.mode == "RGB" else rgb.convert("RGB")
        self.scale = scale
        self._array = np.asarray(self.rgb)
        self._gray = _gray_for_small_hashes(self.rgb)
        self._pdq_variants: list[int] | None = None
        self._quality = 0
        self._small: dict[int, tuple[int, int, int]] = {}
        self._phash: dict[int, int] = {}
        self._resized: dict[bool, np.ndarray] = {}

    @property
    def pdq_variants(self) -> list[int]:
        if self._pdq_variants is None:
            self._pdq_variants, self._quality = pdq_dihedral(self._array, self.scale)
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
            if self._gray.size == (_SMALL_SIDE, _SMALL_SIDE):
                # resampling 128 -> 32 is mirror-symmetric, so every orientation's 32 x 32
                # picture is a flip of the upright or the transposed one (bit for bit)
                transposed, flips = _DIHEDRAL_FROM_TRANSPOSE[variant]
                if transposed not in self._resized:
                    g = self._gray.transpose(Image.Transpose.TRANSPOSE) if transposed \
                        else self._gray
                    self._resized[transposed] = np.asarray(
                        g.resize((32, 32), imagehash.ANTIALIAS))
                a = self._resized[transposed]
                self._phash[variant] = _phash_of_pixels(a[::flips[0], ::flips[1]])
            else:
                self._phash[variant] = phash_of_gray(self._oriented_gray(variant))
        return self._phash[variant]

    def hashset(self, variant: int = 0) -> HashSet:
        p, d, w = self.small(variant)
        return HashSet(self.pdq_variants[variant], self.quality, p, d, w)


def compute_hashes(picture: Image.Image | LoadedImage) -> HashSet:
    """The default hash set of a picture, in its own orientation.

    Pass the `LoadedImage` from `imgverify.load` rather than its `.image`: its reduction scale
    keeps PDQ close to the full-resolution hash (a bare reduced picture hashes as itself).
    """
    if isinstance(picture, Image.Image):
        return PictureHasher(picture).hashset(0)
    return PictureHasher(picture.image, picture.scale).hashset(0)


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

    def run(lines: np.ndarray, ref: float, most: int) -> int:
        # how many of the first `most` lines (rows of `lines`) are flat in a row: the 98th
        # percentile of their distance to `ref` within `tolerance`; judged a block at a time
        # (one numpy call per block, not per line), growing while the border goes on
        done, block = 0, 8
        while done < most:
            part = lines[done:min(most, done + block)]
            ok = np.percentile(np.abs(part - ref), 98, axis=1) <= tolerance
            if not ok.all():
                return done + int(np.argmin(ok))
            done += part.shape[0]
            block *= 2
        return done

    top = run(arr, float(np.median(arr[0, :])), h // 2)
    bottom = h - run(arr[::-1], float(np.median(arr[-1, :])), h - (top + h // 4))
    cols = arr[top:bottom].T
    left = run(cols, float(np.median(arr[:, 0])), w // 2)
    right = w - run(cols[::-1], float(np.median(arr[:, -1])), w - (left + w // 4))
    removed_h = (top + (h - bottom)) / h
    removed_w = (left + (w - right)) / w
    if max(removed_h, removed_w) < min_fraction:
        return None
    if (bottom - top) < 0.2 * h or (right - left) < 0.2 * w:
        return None  # a mostly flat picture, not a framed photo
    return (left, top, right, bottom)
