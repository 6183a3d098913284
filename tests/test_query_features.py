"""Query-side shortcuts that must give what the long way gives: pHash variants from two
resized pictures, descriptors computed only for the kept keypoints, mirrored descriptors at
mirrored keypoints, and the region probe of the local stage."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFilter

from imgverify.signals.features import QUERY_FEATURES, QueryExtraction, _gray_array, _spread
from imgverify.signals.hashing import DIHEDRAL_TRANSPOSE, PictureHasher, imagehash_to_int

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"


def _photos(n: int) -> list[Path]:
    if not PHOTOS.exists():
        pytest.skip("the shared photos are not available")
    return (sorted((PHOTOS / "coco128" / "train2017").glob("*.jpg"))[:n]
            + sorted((PHOTOS / "bsds500" / "test").glob("*.jpg"))[:n])


def test_phash_variants_are_imagehash_bit_for_bit() -> None:
    for path in _photos(6):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        for pic in (rgb, rgb.resize((200, 150))):  # the 128 px shortcut, and the plain path
            hasher = PictureHasher(pic)
            for k, op in enumerate(DIHEDRAL_TRANSPOSE):
                gray = hasher._gray if op is None else hasher._gray.transpose(op)
                assert hasher.phash(k) == int(str(imagehash.phash(gray)), 16)
                assert imagehash_to_int(imagehash.dhash(gray)) == int(str(imagehash.dhash(gray)),
                                                                      16)


def test_descriptors_of_kept_keypoints_are_detect_and_compute() -> None:
    import cv2

    for path in _photos(3):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        arr = _gray_array(rgb, 640)
        orb = cv2.ORB_create(nfeatures=QUERY_FEATURES * 3, fastThreshold=12,
                             edgeThreshold=15, patchSize=31)
        keypoints, desc = orb.detectAndCompute(arr, None)
        order = _spread(keypoints, arr.shape[1], arr.shape[0], QUERY_FEATURES)
        got = QueryExtraction(rgb, QUERY_FEATURES).features
        assert np.array_equal(got.descriptors, desc[order])
        want = np.array([keypoints[i].pt for i in order], dtype=np.float32)
        assert np.allclose(got.points * [arr.shape[1], arr.shape[0]], want, atol=1e-3)


def test_a_probe_head_is_the_start_of_the_full_description() -> None:
    """Regions describe only their probe's keypoints until the probe passes: the same
    descriptors as the first ones of the full description, before or after it."""
    for path in _photos(3):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        early = QueryExtraction(rgb, QUERY_FEATURES)
        head = early.head(160)
        full = early.features
        assert len(head) == 160 and len(full) > 160
        assert np.array_equal(head.descriptors, full.descriptors[:160])
        assert np.array_equal(head.points, full.points[:160])
        assert np.array_equal(early.head(160).descriptors, head.descriptors)
        late = QueryExtraction(rgb, QUERY_FEATURES)
        assert np.array_equal(late.features.descriptors, full.descriptors)
        assert np.array_equal(late.head(160).descriptors, head.descriptors)


def test_mirrored_descriptors_match_the_mirror_images_own() -> None:
    agree = total = 0
    for path in _photos(3):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        mirrored = QueryExtraction(rgb, QUERY_FEATURES).mirrored()
        flipped = QueryExtraction(rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                  QUERY_FEATURES).features
        scale = np.array([flipped.width, flipped.height], dtype=np.float32)
        for p, d in zip(mirrored.points, mirrored.descriptors, strict=True):
            gap = np.hypot(*((flipped.points - p) * scale).T)
            j = int(np.argmin(gap))
            total += 1
            if gap[j] < 1.5 and np.unpackbits(flipped.descriptors[j] ^ d).sum() <= 16:
                agree += 1
    assert agree >= 0.9 * total


def _collage_2048(photos: list[Path]) -> tuple[bytes, Image.Image]:
    """A 3 x 3 collage of real photos at 2048 px, as a collage app saves it, and its centre
    tile as laid out (the truth)."""
    canvas = Image.new("RGB", (2048, 2048), (255, 255, 255))
    cell = 2048 // 3
    centre = None
    for i, p in enumerate(photos[:9]):
        with Image.open(p) as im:
            tile = im.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS)
        canvas.paste(tile, ((i % 3) * cell, (i // 3) * cell))
        if i == 4:
            centre = tile
    assert centre is not None
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue(), centre


def test_small_regions_come_from_a_sharper_decode() -> None:
    """A collage tile is a third of the feature picture's side; it is cut from a larger
    decode of the same file, not enlarged from those few pixels."""
    from imgverify.checker import _feature_side, _local_picture, _sharper_regions
    from imgverify.media.load import load
    from imgverify.signals.features import MIN_FEATURE_SIDE

    data, truth = _collage_2048(_photos(9))
    loaded = load(data, feature_side=_feature_side)
    picture, _side = _local_picture(loaded)
    box = (1 / 3, 1 / 3, 2 / 3, 2 / 3)
    w, h = picture.size
    coarse = picture.crop((int(w / 3), int(h / 3), int(2 * w / 3), int(2 * h / 3)))
    assert max(coarse.size) < MIN_FEATURE_SIDE  # it would have been enlarged
    sharp = _sharper_regions(loaded, picture)(box)
    assert sharp is not None and max(sharp.size) == MIN_FEATURE_SIDE
    # the detail keypoints are found on: edges of the sharp cut follow the laid-out tile's
    # far better than those of the enlarged one
    def edges(im: Image.Image) -> np.ndarray:
        return np.asarray(im.convert("L").filter(ImageFilter.FIND_EDGES), np.float32).ravel()

    target = edges(truth.resize(sharp.size, Image.Resampling.LANCZOS))
    r_sharp = np.corrcoef(edges(sharp), target)[0, 1]
    r_coarse = np.corrcoef(edges(coarse.resize(sharp.size, Image.Resampling.BICUBIC)),
                           target)[0, 1]
    assert r_sharp > r_coarse + 0.15, (r_sharp, r_coarse)
    # a picture that is all the original has gives nothing more
    small = load(_photos(1)[0], feature_side=_feature_side)
    assert _sharper_regions(small, _local_picture(small)[0])(box) is None
