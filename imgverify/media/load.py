"""Safe decoding of one submitted image into the small RGB picture the hashes need.

Every source (path, URL, bytes, PIL image, standard input) ends up as `LoadedImage`: the
original bytes (for sha256 and EXIF), the oriented first frame decoded at reduced scale,
and the original size. Decoding problems become typed `InputError`s, never tracebacks.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from imgverify.errors import (
    CorruptImageError,
    EmptyInputError,
    ImageTooLargeError,
    InputError,
    NotAnImageError,
    SourceNotFoundError,
    TruncatedImageError,
    UnsupportedFormatError,
)
from imgverify.media.fetch import FetchPolicy, fetch_url, is_url

Source = Union[str, os.PathLike[str], bytes, bytearray, memoryview, Image.Image]

SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"}

# Optional decoders (the `formats` extra); absent plugins simply leave the format unsupported.
try:  # pragma: no cover - depends on optional packages
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # noqa: BLE001
    pass
try:  # pragma: no cover
    import pillow_avif  # noqa: F401
except Exception:  # noqa: BLE001
    pass


#: Smallest side we ask the JPEG decoder for. PDQ and the 64-bit hashes work on 64x64 and
#: 32x32 reductions, so a ~256-500 px picture gives hashes within a few bits of full size.
HASH_MIN_SIDE = 256
#: Longest side of the working picture kept after decoding (formats without DCT scaling).
WORK_MAX_SIDE = 1024


@dataclass(frozen=True)
class Limits:
    """User-settable safety limits; the defaults admit any real camera photo."""

    max_pixels: int = 200_000_000
    max_bytes: int = 100 * 1024 * 1024
    #: animations with more frames are refused (only the first frame is ever decoded)
    max_frames: int = 100_000
    #: wall-clock seconds one input may take in a scan (enforced by `batch`, per worker)
    timeout_s: float = 60.0
    fetch: FetchPolicy = field(default_factory=FetchPolicy)


@dataclass
class LoadedImage:
    name: str
    data: bytes
    image: Image.Image  # RGB, oriented, reduced
    original_size: tuple[int, int]  # as displayed (after orientation)
    format: str
    #: the same decode at the larger scale local features need, when the hash picture is
    #: smaller than that (`load(..., feature_side=...)`); None otherwise
    larger: Image.Image | None = None
    _sha256: str | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per pixel of `image` (1.0 when decoded in full); PDQ uses it to
        hash the reduced decode as the full-resolution picture would hash."""
        return reduction_scale(self.original_size, self.image.size)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.data).hexdigest()
        return self._sha256


def describe_source(source: Source) -> str:
    if isinstance(source, Image.Image):
        return "<PIL image>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    text = os.fspath(source)
    if is_url(text):
        from imgverify.media.fetch import redact_url

        return redact_url(text)
    return text


def read_source(source: Source, limits: Limits) -> tuple[str, bytes]:
    """Return (display name, raw bytes) for a path, URL, '-' or bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise ImageTooLargeError(
                f"input is {len(data)} bytes, over the {limits.max_bytes}-byte limit")
        return "<bytes>", data
    assert not isinstance(source, Image.Image)
    text = os.fspath(source)
    if text == "-":
        data = sys.stdin.buffer.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise ImageTooLargeError(f"standard input exceeds the {limits.max_bytes}-byte limit")
        return "-", data
    if is_url(text):
        return describe_source(text), fetch_url(text, limits.fetch)
    if "://" in text[:12]:
        raise InputError(f"unsupported URL scheme in {text!r}: only http and https are fetched")
    path = Path(text)
    try:
        if not path.is_file():
            if path.exists():
                raise InputError(f"{text} is not a regular file")
            raise SourceNotFoundError(f"no such file: {text}")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageTooLargeError(
                f"{text} is {size} bytes, over the {limits.max_bytes}-byte limit (--max-bytes)"
            )
        with path.open("rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except PermissionError:
        raise InputError(f"permission denied reading {text}") from None
    except OSError as exc:
        raise InputError(f"cannot read {text}: {exc.strerror or exc}") from None
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"{text} grew past the {limits.max_bytes}-byte limit while read")
    return text, data


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _image_magic(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _sniff_non_image(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML page"
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith(b"pk\x03\x04"):
        return "a ZIP archive"
    if head.startswith((b"{", b"[")):
        return "JSON text"
    try:
        data[:512].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def _identify(data: bytes) -> Image.Image:
    """`Image.open` without Pillow's process-wide decompression-bomb cap.

    Our own cap (`Limits.max_pixels`, checked by the caller on the declared size before any
    pixel is decoded) is the one the user set, and a library may not turn Pillow's global
    off for the application that imported it. So this walks Pillow's registered openers as
    `Image.open` does, minus its size check; formats we never decode are refused later.
    """
    registry = getattr(Image, "OPEN", None)
    if not isinstance(registry, dict) or not hasattr(Image, "ID"):  # pragma: no cover
        return Image.open(io.BytesIO(data))  # a Pillow without the registry: its own rules
    fp = io.BytesIO(data)
    prefix = data[:16]

    def attempt(formats: list[str]) -> Image.Image | None:
        for fmt in formats:
            factory, accept = registry[fmt]
            ok = not accept or accept(prefix)
            if not ok or isinstance(ok, str):
                continue
            fp.seek(0)
            try:
                return factory(fp, None)  # type: ignore[no-any-return]
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
        return None

    Image.preinit()
    im = attempt(list(Image.ID))
    if im is None:
        known = set(Image.ID)
        Image.init()
        im = attempt([f for f in Image.ID if f not in known])
    if im is None:
        raise UnidentifiedImageError("cannot identify image file")
    return im


def open_image(data: bytes, name: str, limits: Limits) -> Image.Image:
    """Identify the image and check its declared size, without decoding pixels yet."""
    if not data:
        raise EmptyInputError(f"{name} is empty (0 bytes)")
    try:
        im = _identify(data)
    except UnidentifiedImageError:
        magic = _image_magic(data)
        if magic:
            raise CorruptImageError(f"{name} starts like a {magic} file but its header is "
                                    "truncated or corrupt") from None
        kind = _sniff_non_image(data)
        raise NotAnImageError(f"{name} is not an image (looks like {kind})") from None
    except Image.DecompressionBombError as exc:  # a plugin's own check on a frame or tile
        raise ImageTooLargeError(f"{name}: {exc}") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise CorruptImageError(f"{name} has a corrupt image header: {exc}") from None
    if im.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"{name} is {im.format}, which is not supported; convert it to JPEG or PNG"
        )
    w, h = im.size
    if w <= 0 or h <= 0:
        raise CorruptImageError(f"{name} declares an empty canvas ({w}x{h})")
    if w * h > limits.max_pixels:
        raise ImageTooLargeError(
            f"{name} declares {w}x{h} = {w * h:,} pixels, over the {limits.max_pixels:,}-pixel "
            "limit (a possible decompression bomb); raise --max-pixels if it is genuine"
        )
    if getattr(im, "is_animated", False):
        try:
            frames = int(getattr(im, "n_frames", 1))
        except Exception:  # noqa: BLE001 - a broken later frame does not spoil the first
            frames = 1
        if frames > limits.max_frames:
            raise ImageTooLargeError(f"{name} has {frames:,} frames, over the "
                                     f"{limits.max_frames:,}-frame limit (--max-frames)")
        im.seek(0)
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Flatten to RGB the way a viewer shows it: transparency over white, 16-bit scaled down."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / 65535.0 if hi > 255 else 1.0
        arr8 = np.clip(arr * scale, 0, 255).astype("uint8")
        return Image.fromarray(arr8, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def decode(data: bytes, name: str = "<bytes>", limits: Limits | None = None,
           reduce: bool = True) -> tuple[Image.Image, tuple[int, int], str]:
    """Decode the first frame, oriented, as RGB; at reduced scale when `reduce` is set.

    Returns (picture, displayed original size, format name).
    """
    rgb, _larger, size, fmt = _decode(data, name, limits, reduce, None)
    return rgb, size, fmt


#: DCT scalings a JPEG decoder offers (Pillow's `draft`), largest reduction first
_JPEG_SCALES = (8, 4, 2, 1)


def _draft_scale(size: tuple[int, int], request: tuple[int, int]) -> int:
    """The reduction `Image.draft` picks for `request` (its own rule, so both decodes of a
    picture can be derived from one)."""
    scale = min(size[0] // max(1, request[0]), size[1] // max(1, request[1]))
    return next(s for s in _JPEG_SCALES if scale >= s or s == 1)


def _draft_request(size: tuple[int, int], long_side: int) -> tuple[int, int] | None:
    """What to ask a JPEG decoder for so the picture keeps at least `long_side` pixels on
    its long side; None when only the full scale does."""
    ratio = max(size) / long_side
    if ratio < 2:
        return None
    target = max(1, int(min(size) / ratio))
    return target, target


def _decode(data: bytes, name: str, limits: Limits | None, reduce: bool,
            side_for: Callable[[tuple[int, int]], int] | None
            ) -> tuple[Image.Image, Image.Image | None, tuple[int, int], str]:
    """(hash picture, larger picture for local features or None, displayed original size,
    format name).

    `side_for(original size)` is the long side local features want. Given, a picture whose
    hash picture would be smaller than that (a large original decoded at reduced scale) is
    decoded once, at the scale the features need, and the hash picture is reduced from it:
    a second decode of the same bytes costs a camera JPEG more than the reduction does.
    """
    limits = limits or Limits()
    im = open_image(data, name, limits)
    fmt = im.format or "unknown"
    orientation = 1
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF must not stop the check
        orientation = 1
    w, h = im.size
    feature_side = side_for((w, h)) if side_for is not None else None
    request: tuple[int, int] | None = None
    hash_scale = 1
    if reduce and fmt in ("JPEG", "MPO") and min(w, h) >= 2 * HASH_MIN_SIDE:
        request = (HASH_MIN_SIDE, HASH_MIN_SIDE)
        hash_scale = _draft_scale((w, h), request)
        if feature_side is not None:
            wanted = _draft_request((w, h), feature_side)
            if wanted is None:
                request = None  # the features need every pixel: decode in full
            elif _draft_scale((w, h), wanted) < hash_scale:
                request = wanted
    try:
        if request is not None:
            im.draft("RGB", request)
        im.seek(0)
        im.load()
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "premature end" in text.lower():
            raise TruncatedImageError(f"{name} is truncated: {text}") from None
        raise CorruptImageError(f"{name} could not be decoded: {text}") from None
    except (SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise CorruptImageError(f"{name} could not be decoded: {exc}") from None
    except MemoryError:
        raise ImageTooLargeError(f"{name} is too large to decode in memory") from None
    larger: Image.Image | None = None
    try:
        rgb = full = _to_rgb(im)
        # what the decoder gave may differ from what was asked (a JPEG with several tiles
        # is not scaled): reduce by what it gave, to the hash picture's scale
        k = max(1, hash_scale // max(1, round(w / rgb.width)))
        if k > 1:
            rgb = rgb.reduce(k)
        if reduce and max(rgb.size) > WORK_MAX_SIDE:
            factor = max(1, max(rgb.size) // (WORK_MAX_SIDE // 2))
            rgb = rgb.reduce(factor) if factor > 1 else rgb
        if feature_side is not None and rgb is not full \
                and max(rgb.size) < feature_side <= max(full.size):
            # the features need more pixels than the hashes: from the same decode, at most
            # twice their side (as `picture_for_features` would re-decode it)
            f = max(1, max(full.size) // feature_side)
            larger = full.reduce(f) if f > 1 else full
            if max(larger.size) > 2 * feature_side:
                larger = larger.copy() if larger is full else larger
                larger.thumbnail((2 * feature_side, 2 * feature_side))
        if orientation in range(2, 9):
            rgb = _apply_orientation(rgb, orientation)
            if larger is not None:
                larger = _apply_orientation(larger, orientation)
    except OSError as exc:
        raise CorruptImageError(f"{name} could not be decoded: {exc}") from None
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return rgb, larger, (w, h), fmt


_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _apply_orientation(im: Image.Image, orientation: int) -> Image.Image:
    return im.transpose(_ORIENTATION_TRANSPOSE[orientation])


def picture_for_features(loaded: LoadedImage, long_side: int) -> Image.Image:
    """The picture at >= `long_side` pixels on its long side where the original allows,
    re-decoding the original bytes at a larger scale only when the hash picture is smaller."""
    have = max(loaded.image.size)
    if have >= long_side or have >= max(loaded.original_size) or loaded.format == "PIL":
        return loaded.image
    if loaded.larger is not None and max(loaded.larger.size) >= long_side:
        return loaded.larger
    try:
        im = open_image(loaded.data, loaded.name, Limits(max_pixels=2**62))
        request = _draft_request(im.size, long_side)
        if im.format in ("JPEG", "MPO") and request is not None:
            im.draft("RGB", request)
        im.load()
        rgb = _to_rgb(im)
        if max(rgb.size) > 2 * long_side:
            rgb.thumbnail((2 * long_side, 2 * long_side))
        orientation = int(im.getexif().get(0x0112, 1) or 1)
        if orientation in range(2, 9):
            rgb = _apply_orientation(rgb, orientation)
        return rgb
    except Exception:  # noqa: BLE001 - the hash picture is a safe fallback
        return loaded.image


def reduction_scale(original_size: tuple[int, int], size: tuple[int, int]
                    ) -> tuple[float, float]:
    """Original pixels per decoded pixel, across and down (never below 1)."""
    (ow, oh), (w, h) = original_size, size
    return max(1.0, ow / max(w, 1)), max(1.0, oh / max(h, 1))


def load(source: Source, limits: Limits | None = None, reduce: bool = True,
         feature_side: Callable[[tuple[int, int]], int] | None = None) -> LoadedImage:
    """Read and decode any supported source; raises a typed InputError on bad input.

    `feature_side(original size)` is the long side the caller's local features will want
    (`picture_for_features`): given, a large original is decoded once for both the hashes
    and the features instead of twice.
    """
    limits = limits or Limits()
    if isinstance(source, Image.Image):
        if source.width * source.height > limits.max_pixels:
            raise ImageTooLargeError("PIL image is over the pixel limit")
        oriented = ImageOps.exif_transpose(source) or source
        rgb = _to_rgb(oriented)
        size = rgb.size
        if reduce and max(rgb.size) > WORK_MAX_SIDE:
            rgb = rgb.copy()
            rgb.thumbnail((WORK_MAX_SIDE, WORK_MAX_SIDE))
        buf = io.BytesIO()
        rgb.save(buf, "PNG")
        return LoadedImage("<PIL image>", buf.getvalue(), rgb, size, "PIL")
    name, data = read_source(source, limits)
    image, larger, size, fmt = _decode(data, name, limits, reduce, feature_side)
    return LoadedImage(name, data, image, size, fmt, larger)


def reference_image(data: bytes, name: str = "<bytes>",
                    limits: Limits | None = None) -> Image.Image:
    """Full-resolution, un-oriented RGB picture, exactly as Meta's pdqhash tools hash it."""
    limits = limits or Limits()
    im = open_image(data, name, limits)
    try:
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")  # no 48 MB copy of a camera JPEG
    except OSError as exc:
        if "truncated" in str(exc):
            raise TruncatedImageError(f"{name} is truncated: {exc}") from None
        raise CorruptImageError(f"{name} could not be decoded: {exc}") from None


def reference_pixels(data: bytes, name: str = "<bytes>", limits: Limits | None = None):  # type: ignore[no-untyped-def]
    """Full-resolution, un-oriented RGB pixels, exactly as Meta's pdqhash tools hash them."""
    import numpy as np

    return np.asarray(reference_image(data, name, limits))
