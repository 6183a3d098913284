"""Growing the archive past the index's switch (linear scan -> multi-index) changes speed,
never what is found (issue 16): the same candidates on both paths for real edited photos,
and the same verdicts from the whole checker below and above the switch."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SmallArchive, bsds, coco
from PIL import Image, ImageOps

import imgverify
from imgverify.match.search import QueryHashes
from imgverify.media.load import load
from imgverify.signals.hashing import compute_hashes
from imgverify.store.index import LINEAR_MAX, MIH_MAX_RADIUS, HashIndex
from imgverify.store.sqlite import HashOnlyReference


def _upright(path: Path) -> Image.Image:
    with Image.open(path) as raw:
        return (ImageOps.exif_transpose(raw) or raw).convert("RGB")


def _centre_crop(im: Image.Image, keep: float) -> Image.Image:
    """Keep `keep` of the area around the centre (the review's crops)."""
    s = math.sqrt(keep)
    cw, ch = int(round(im.width * s)), int(round(im.height * s))
    x, y = (im.width - cw) // 2, (im.height - ch) // 2
    return im.crop((x, y, x + cw, y + ch))


def _jpeg(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


EDITS = {
    "centre_80": lambda im: _centre_crop(im, 0.8),
    "centre_60": lambda im: _centre_crop(im, 0.6),
    "rotate90_small": lambda im: im.rotate(90, expand=True).resize(
        (im.height // 2, im.width // 2)),
    "mirror_q40": lambda im: Image.open(io.BytesIO(_jpeg(ImageOps.mirror(im), 40))),
}


def _found(result: imgverify.CheckResult) -> tuple[str, str | None]:
    return result.verdict, result.matches[0].sha256 if result.matches else None


def test_both_paths_return_the_same_candidates_for_real_edited_photos() -> None:
    photos = coco(24) + bsds(16)
    rows = []
    for key, p in enumerate(photos, start=1):
        im = _upright(p)
        rows.append((key, "full", compute_hashes(load(_jpeg(im, 90)))))
        # a second near copy of each photo: several candidates per query, ties in distance
        rows.append((1000 + key, "full", compute_hashes(load(_jpeg(im.resize(
            (im.width // 2, im.height // 2)), 30)))))
    rng = np.random.default_rng(16)
    filler = [(5000 + i, "full", compute_hashes(load(_jpeg(Image.fromarray(
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((64, 64))))))
        for i in range(40)]
    index = HashIndex.from_rows(rows + filler)
    compared = hits = 0
    for p in photos[:20]:
        im = _upright(p)
        for edit in EDITS.values():
            loaded = load(_jpeg(edit(im)))
            for _name, _pic, hasher in QueryHashes(loaded.image, loaded.scale).parts:
                for radius, limit in ((MIH_MAX_RADIUS, 50), (24, 1), (MIH_MAX_RADIUS, 3)):
                    linear = index.search(hasher.pdq_variants, radius, limit, path="linear")
                    mih = index.search(hasher.pdq_variants, radius, limit, path="mih")
                    assert [(c.row, c.ref_key, c.ref_part, c.pdq_distance, c.dihedral)
                            for c in linear] == \
                        [(c.row, c.ref_key, c.ref_part, c.pdq_distance, c.dihedral)
                         for c in mih]
                    assert index.search(hasher.pdq_variants, radius, limit) == linear
                    compared += 1
                    hits += len(linear)
    assert compared >= 240 and hits >= 100  # the queries did find things to compare


def test_a_radius_beyond_the_multi_index_is_a_linear_scan_on_any_archive() -> None:
    rng = np.random.default_rng(3)
    n = LINEAR_MAX + 500
    pdq = rng.integers(0, 2**63, size=(n, 4), dtype=np.uint64)
    z = np.zeros(n, np.uint64)
    index = HashIndex(np.arange(n, dtype=np.uint32), np.zeros(n, np.uint8), ["full"], pdq, z,
                      z, z)
    query = [int.from_bytes(pdq[7].astype(">u8").tobytes(), "big")]
    wide = index.search(query, 100, limit=n)
    assert wide == index.search(query, 100, limit=n, path="linear")
    assert wide[0].row == 7 and all(c.pdq_distance <= 100 for c in wide)
    with pytest.raises(ValueError):
        index.search(query, MIH_MAX_RADIUS + 1, path="mih")
    with pytest.raises(ValueError):
        index.search(query, 10, path="fast")


def test_checker_finds_the_same_crops_below_and_above_the_switch(
        small_archive: SmallArchive, archive_copy: Path) -> None:
    """Whole checker and global stage alone (its verdicts once changed at the switch)."""
    queries = [(p.name, name, _jpeg(edit(_upright(p))))
               for p in small_archive.photos[:10]
               for name, edit in EDITS.items() if name != "mirror_q40"]
    stages = {"whole": imgverify.Thresholds(),
              "global": dataclasses.replace(imgverify.Thresholds(), use_local_features=False)}

    def outcomes(arch: imgverify.Archive) -> dict[tuple[str, str, str], tuple[str, str | None]]:
        return {(stage, p, e): _found(imgverify.check(data, arch, thresholds=t))
                for stage, t in stages.items() for p, e, data in queries}

    with imgverify.Archive.open(archive_copy) as arch:
        assert len(arch.index()) <= LINEAR_MAX
        below = outcomes(arch)
        rng = np.random.default_rng(20)
        pad = LINEAR_MAX + 1_000 - len(arch.index())
        words = rng.integers(0, 2**63, size=(pad, 4), dtype=np.uint64) << np.uint64(1)
        words |= rng.integers(0, 2, size=(pad, 4), dtype=np.uint64)
        for start in range(0, pad, 5_000):
            arch.write_hashes([
                HashOnlyReference(int.from_bytes(w.astype(">u8").tobytes(), "big"), 100,
                                  {"date": "2001-01-01"})
                for w in words[start:start + 5_000]])
        assert len(arch.index()) > LINEAR_MAX
        above = outcomes(arch)
    assert above == below
    crops = [v for (stage, _p, e), v in below.items() if stage == "whole" and e == "centre_80"]
    assert sum(verdict != "no_match" for verdict, _sha in crops) >= 8, crops
