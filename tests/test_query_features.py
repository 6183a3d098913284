"""Query-side shortcuts that must give what the long way gives: pHash variants from two
resized pictures, descriptors computed only for the kept keypoints, mirrored descriptors at
mirrored keypoints, and the region probe of the local stage."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

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
