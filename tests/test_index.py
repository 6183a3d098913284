"""The index against brute force, its cache, and the reduced-decode fast path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imagehash
import numpy as np
import pytest

import imgverify
from imgverify.ingest import ingest_manifest
from imgverify.media.load import load
from imgverify.signals.hashing import PictureHasher, compute_hashes, hamming, pdq_of_array
from imgverify.store.index import LINEAR_MAX, HashIndex, pdq_words

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
PDQ_REF = ROOT.parent / "shared" / "data" / "pdq-reference"


def _index(pdq: np.ndarray) -> HashIndex:
    n = pdq.shape[0]
    z = np.zeros(n, np.uint64)
    return HashIndex(np.arange(n, dtype=np.uint32), np.zeros(n, np.uint8), ["full"], pdq, z,
                     z, z)


def _as_int(words: np.ndarray) -> int:
    return int.from_bytes(words.astype(">u8").tobytes(), "big")


def _brute(pdq: np.ndarray, variants: list[int], radius: int) -> dict[int, int]:
    q = np.stack([pdq_words(v) for v in variants])
    d = np.min([np.bitwise_count(pdq ^ q[v]).sum(axis=1) for v in range(len(variants))],
               axis=0)
    return {int(r): int(d[r]) for r in np.nonzero(d <= radius)[0]}


def _planted(rng: np.random.Generator, n: int, clusters: int) -> np.ndarray:
    pdq = rng.integers(0, 2**63, size=(n, 4), dtype=np.uint64) | (
        rng.integers(0, 2, size=(n, 4), dtype=np.uint64) << np.uint64(63))
    for c in range(clusters):  # clusters of 50 near-duplicates with 0-31 bit flips
        base = _as_int(pdq[c])
        for j in range(1, 51):
            v = base
            for b in rng.choice(256, size=int(rng.integers(0, 32)), replace=False):
                v ^= 1 << int(b)
            pdq[clusters + c * 50 + j] = pdq_words(v)
    return pdq


def test_multi_index_equals_brute_force_on_random_and_near_duplicates() -> None:
    rng = np.random.default_rng(5)
    pdq = _planted(rng, LINEAR_MAX + 30_000, clusters=40)
    index = _index(pdq)
    for trial in range(60):
        row = int(rng.integers(len(pdq))) if trial % 2 else trial  # cluster heads too
        variants = [_as_int(pdq[row])] + [int(x) for x in rng.integers(0, 2**63, size=7)]
        for radius in (0, 10, 31):
            got = {r: d for r, (d, _v) in index.pdq_within(variants, radius).items()}
            assert got == _brute(pdq, variants, radius)
    # search() above LINEAR_MAX takes the multi-index path and returns the same rows
    cands = index.search([_as_int(pdq[0])] * 8, 31, limit=10_000)
    assert {c.row for c in cands} == set(_brute(pdq, [_as_int(pdq[0])], 31))


def test_multi_index_on_real_hashes() -> None:
    if not PHOTOS.exists():
        pytest.skip("../shared/data/photos is absent")
    files = sorted((PHOTOS / "bsds500" / "val").glob("*.jpg"))[:60]
    real = [PictureHasher(load(p).image).hashset(0).pdq for p in files]
    rng = np.random.default_rng(9)
    filler = rng.integers(0, 2**63, size=(LINEAR_MAX + 5_000, 4), dtype=np.uint64)
    pdq = np.concatenate([np.stack([pdq_words(v) for v in real]), filler])
    index = _index(pdq)
    for v in real[:30]:
        got = {r: d for r, (d, _v) in index.pdq_within([v], 31).items()}
        assert got == _brute(pdq, [v], 31)


def test_cache_round_trip_and_staleness(tmp_path: Path) -> None:
    from imgverify.store.cache import CacheKey, open_cache, publish_cache
    from imgverify.store.index import CACHE_FORMAT

    rng = np.random.default_rng(1)
    pdq = _planted(rng, LINEAR_MAX + 2_000, clusters=5)
    index = _index(pdq)
    key = CacheKey("arch-a", "7", "token-a", 2)
    publish_cache(tmp_path, "index", CACHE_FORMAT, key, lambda f: index.save(f, with_mih=True))
    found = open_cache(tmp_path, "index", CACHE_FORMAT, key)
    assert found is not None
    loaded = HashIndex.load(*found)
    assert loaded is not None
    # any other identity, generation, change token, pipeline or format is another cache
    for other in (CacheKey("arch-b", "7", "token-a", 2), CacheKey("arch-a", "8", "token-a", 2),
                  CacheKey("arch-a", "7", "token-b", 2), CacheKey("arch-a", "7", "token-a", 1)):
        assert open_cache(tmp_path, "index", CACHE_FORMAT, other) is None
    assert open_cache(tmp_path, "index", CACHE_FORMAT - 1, key) is None
    variants = [_as_int(pdq[0])]
    assert loaded.pdq_within(variants, 31) == index.pdq_within(variants, 31)
    assert loaded.mih.layout == index.mih.layout
    # a manifest edited to claim another format is refused, never misread
    manifest = found[0] / "manifest.json"
    old = json.loads(manifest.read_text())
    old["format"] = CACHE_FORMAT - 1
    manifest.write_text(json.dumps(old))
    assert open_cache(tmp_path, "index", CACHE_FORMAT, key) is None


def test_archive_index_equals_rows(tmp_path: Path) -> None:
    if not PHOTOS.exists():
        pytest.skip("../shared/data/photos is absent")
    files = sorted((PHOTOS / "coco128" / "val2017").glob("*.jpg"))[:6]
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "date"])
        for p in files:
            w.writerow([str(p), "2021-01-01"])
    archive = imgverify.Archive.open(tmp_path / "a.sqlite")
    ingest_manifest(archive, manifest)
    index = archive.index()
    rows = [(ref.key, name, hs) for ref in archive.iter_references()
            for name, hs in archive.hashes_of(ref.key)]
    rows.sort(key=lambda r: (r[0], r[1]))
    fresh = HashIndex.from_rows(rows)
    assert len(index) == len(fresh) >= len(files)
    for i, (key, name, hs) in enumerate(rows):
        assert int(index.ref_keys[i]) == key and index.part_names[index.part_codes[i]] == name
        assert index.distances(i, hs) == fresh.distances(i, hs) == dict.fromkeys(
            ("pdq", "phash", "dhash", "whash"), 0)


def test_reduced_decode_stays_close_to_full_resolution() -> None:
    """The fast path (reduced decode) against the reference implementations run on the full
    decode: Meta's pdqhash within 10 bits, imagehash.phash within 4, on every camera photo
    and every PDQ reference image."""
    if not PHOTOS.exists():
        pytest.skip("../shared/data/photos is absent")
    files = sorted((PHOTOS / "camera_exif").rglob("*.jpg")) + sorted(
        (PDQ_REF / "pdq/data/reg-test-input").rglob("*.jpg"))
    pdq_d, ph_d = [], []
    reduced = 0
    for p in files:
        fast_image = load(p)
        fast = compute_hashes(fast_image)
        full = load(p, reduce=False).image
        reduced += min(fast_image.scale) > 1
        pdq_d.append(hamming(fast.pdq, pdq_of_array(np.asarray(full))[0]))
        ph_d.append(hamming(fast.phash, int(str(imagehash.phash(full)), 16)))
    assert reduced >= 30  # the camera photos really take the reduced path
    assert max(ph_d) <= 4, ph_d
    assert max(pdq_d) <= 10, pdq_d


def _flip(value: int, chunk: int, bits: list[int]) -> int:
    """Flip bits of one 16-bit chunk (0 = most significant chunk; bit 0 = its top bit)."""
    for b in bits:
        value ^= 1 << (255 - (chunk * 16 + b))
    return value


def _index_with_layout(pdq: np.ndarray, dir_bits: int | None) -> HashIndex:
    from imgverify.store.index import PdqMultiIndex

    index = _index(pdq)
    index._mih = PdqMultiIndex.build(pdq, dir_bits)
    return index


@pytest.mark.parametrize("dir_bits", [None, 16, 12, 8])
def test_every_table_layout_equals_brute_force_on_concentrated_differences(
        dir_bits: int | None) -> None:
    """Near-duplicates whose differing bits pile into chunk heads, the worst case for the
    packed next-chunk filter, at several directory sizes (the 10 M layout has no low bits,
    the 1 M layout two)."""
    rng = np.random.default_rng(11 + (dir_bits or 0))
    n = LINEAR_MAX + 10_000
    pdq = rng.integers(0, 2**63, size=(n, 4), dtype=np.uint64)
    base = _as_int(pdq[0])
    for i in range(1, 2001):
        v, left = base, int(rng.integers(20, 32))
        for c in rng.permutation(16):
            k = min(left, int(rng.choice([0, 1, 2, 2, 2, 3, 4, 5])))
            left -= k
            head = int(rng.integers(max(k, 1), 17))
            v = _flip(v, int(c), [int(b) for b in rng.choice(head, size=k, replace=False)])
        pdq[i] = pdq_words(v)
    index = _index_with_layout(pdq, dir_bits)
    for q in [base] + [_as_int(pdq[i]) for i in rng.integers(1, 2001, 25)]:
        got = {r: d for r, (d, _v) in index.pdq_within([q], 31).items()}
        assert got == _brute(pdq, [q], 31)


def test_filter_boundary_case_at_distance_31(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only chunk 0 is within one bit (0 bits) and the head of chunk 1 differs in 3 bits:
    distance 3 + 14 x 2 = 31. The proof's bound (3) keeps it; a tighter one would not."""
    import imgverify.store.index as ix

    rng = np.random.default_rng(3)
    pdq = rng.integers(0, 2**63, size=(LINEAR_MAX + 1000, 4), dtype=np.uint64)
    base = _as_int(pdq[0])
    v = _flip(base, 1, [0, 1, 2])
    for c in range(2, 16):
        v = _flip(v, c, [7, 12])
    pdq[1] = pdq_words(v)
    assert hamming(base, v) == 31
    for dir_bits in (None, 16, 8):
        index = _index_with_layout(pdq, dir_bits)
        assert 1 in index.pdq_within([base], 31)
    monkeypatch.setattr(ix, "EXT_MAX_DISTANCE", 2)
    assert 1 not in _index_with_layout(pdq, 16).pdq_within([base], 31)
