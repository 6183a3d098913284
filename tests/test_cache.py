"""Caches derived from an archive never answer for another archive, or another state of it.

A cache read for the wrong archive is a wrong attribution: a row of the deleted archive comes
back as a reference of the new one, with the new one's event, date and credit.
"""

from __future__ import annotations

import io
import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import coco, manifest_rows, write_manifest
from PIL import Image

import imgverify
import imgverify.signals.features as features_module
import imgverify.store.sqlite as archive_module
from imgverify.ingest import ingest_manifest
from imgverify.store.cache import CacheKey, open_cache, publish_cache
from imgverify.store.index import CACHE_FORMAT, HashIndex


def _reencoded(photo: Path) -> bytes:
    """A copy with other bytes (so the sha256 look-up cannot find it): found by hashes only."""
    buf = io.BytesIO()
    Image.open(photo).convert("RGB").save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _cropped(photo: Path) -> Image.Image:
    """A crop the global hashes cannot find: only the local-feature index can."""
    im = Image.open(photo).convert("RGB")
    w, h = im.size
    return im.crop((int(w * 0.3), int(h * 0.3), w, h))


def _build(path: Path, photos: list[Path], year: int) -> None:
    manifest = write_manifest(path.with_suffix(".csv"), manifest_rows(photos, year))
    with imgverify.Archive.open(path) as arch:
        report = ingest_manifest(arch, manifest)  # one batch: generation 1
    assert report.added == len(photos)


@pytest.fixture()
def caching(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache even small archives, so that ten photos exercise what large ones do."""
    monkeypatch.setattr(archive_module, "CACHE_MIN_ROWS", 0)
    monkeypatch.setattr(features_module, "IVF_MIN_DESCRIPTORS", 500)


def test_rebuilt_archive_never_reads_the_deleted_archives_cache(tmp_path: Path,
                                                                 caching: None) -> None:
    """Delete an archive, build another at the same path that reaches the same generation:
    the old hash and feature caches must not be used (they were, on generation alone)."""
    old_photos, new_photos = coco(10), coco(10, start=10)
    path = tmp_path / "desk.sqlite"
    _build(path, old_photos, 2016)
    with imgverify.Archive.open(path) as first:
        assert first.generation() == "1"
        assert imgverify.check(_reencoded(old_photos[2]), first).verdict == "likely_recycled"
        assert imgverify.check(_cropped(old_photos[4]), first).verdict == "likely_recycled"
        first_id = first.archive_id()
    cache = path.with_name(path.name + ".index")
    assert list(cache.glob("index-*")) and list(cache.glob("features-*"))

    path.unlink()  # the cache folder stays behind, as it would for a user
    _build(path, new_photos, 2019)
    with imgverify.Archive.open(path) as second:
        assert second.generation() == "1"
        assert second.archive_id() != first_id
        for query in (_reencoded(old_photos[2]), _cropped(old_photos[4])):
            result = imgverify.check(query, second)
            assert result.verdict == "no_match", [m.to_dict() for m in result.matches]
        # and the archive's own photos are still found, with their own context
        hit = imgverify.check(_reencoded(new_photos[3]), second)
        assert hit.verdict == "likely_recycled"
        assert hit.matches[0].caption == manifest_rows(new_photos, 2019)[3]["caption"]
        assert hit.matches[0].date.startswith("2019")


def test_each_write_changes_the_cache_key(tmp_path: Path, caching: None) -> None:
    """Two copies of one archive that diverge reach the same generation with different
    content: the random change token written with every change keeps them apart."""
    path = tmp_path / "a.sqlite"
    _build(path, coco(4), 2016)
    copy = tmp_path / "b.sqlite"
    shutil.copy(path, copy)
    with imgverify.Archive.open(path) as a, imgverify.Archive.open(copy) as b:
        assert a.cache_key() == b.cache_key()
        a.remove([next(a.iter_references()).reference_id])
        b.remove([list(b.iter_references())[-1].reference_id])
        ka, kb = a.cache_key(), b.cache_key()
        assert ka is not None and kb is not None
        assert ka.generation == kb.generation and ka.change_token != kb.change_token


def _random_index(seed: int, rows: int = 3_000) -> HashIndex:
    rng = np.random.default_rng(seed)
    pdq = rng.integers(0, 2**63, size=(rows, 4), dtype=np.uint64)
    z = np.full(rows, seed, np.uint64)
    return HashIndex(np.arange(rows, dtype=np.uint32), np.zeros(rows, np.uint8), ["full"], pdq,
                     z, z, z)


def _racing_writer(root: str, generation: int, start: Any) -> None:
    index = _random_index(generation)
    key = CacheKey("arch", str(generation), f"token{generation}", 2)
    start.wait()
    for _ in range(5):
        publish_cache(Path(root), "index", CACHE_FORMAT, key,
                      lambda f: index.save(f, with_mih=False))


def test_writers_racing_to_save_never_mix_generations(tmp_path: Path) -> None:
    """Six processes publish caches of three generations (two writers each) at the same time:
    every cache that opens holds exactly its own generation's arrays, and the newest survives
    (a writer of an older generation finishing last must not delete it)."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(6)
    procs = [ctx.Process(target=_racing_writer, args=(str(tmp_path), 1 + i % 3, start))
             for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    opened = []
    for generation in (1, 2, 3):
        key = CacheKey("arch", str(generation), f"token{generation}", 2)
        found = open_cache(tmp_path, "index", CACHE_FORMAT, key)
        if found is None:
            continue  # an older generation, removed by a newer writer: allowed
        opened.append(generation)
        loaded = HashIndex.load(*found)
        expected = _random_index(generation)
        assert loaded is not None
        assert np.array_equal(np.asarray(loaded.pdq), np.asarray(expected.pdq))
        assert set(np.asarray(loaded.phash).tolist()) == {generation}
    assert 3 in opened, "the newest generation's cache is never pruned by an older writer"
    assert not list(tmp_path.glob(".index-*")), "no private folder is left behind"


def test_discarding_a_cache_another_writer_already_removed_leaves_nothing(
        tmp_path: Path) -> None:
    """The racing writers above once left an empty private folder behind: a writer set a
    damaged cache aside after another had already pruned it, and its empty aside folder
    stayed. Nothing of a discard may outlive it, whether there was a folder to move or not."""
    from imgverify.store.cache import _discard

    _discard(tmp_path, "index", tmp_path / "index-pruned-meanwhile")
    assert list(tmp_path.iterdir()) == []
    damaged = tmp_path / "index-damaged"
    damaged.mkdir()
    (damaged / "pdq.npy").write_bytes(b"truncated")
    _discard(tmp_path, "index", damaged)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_cache_is_replaced_by_the_next_writer(tmp_path: Path) -> None:
    """A cache damaged under its own name (a full disk, a crash during a copy) must not make
    every later process rebuild the index for as long as the archive stays the same."""
    index = _random_index(7)
    key = CacheKey("arch", "4", "token", 2)

    def save(folder: Path) -> dict[str, Any]:
        return index.save(folder, with_mih=False)

    folder = publish_cache(tmp_path, "index", CACHE_FORMAT, key, save)
    assert folder is not None
    victim = folder / "pdq.npy"
    victim.write_bytes(victim.read_bytes()[:-7])
    assert open_cache(tmp_path, "index", CACHE_FORMAT, key) is None
    assert publish_cache(tmp_path, "index", CACHE_FORMAT, key, save) == folder
    found = open_cache(tmp_path, "index", CACHE_FORMAT, key)
    assert found is not None
    loaded = HashIndex.load(*found)
    assert loaded is not None and np.array_equal(np.asarray(loaded.pdq),
                                                 np.asarray(index.pdq))
    assert not list(tmp_path.glob(".index-*")), "the damaged copy is gone"


def test_an_older_writer_keeps_a_newer_cache_and_a_newer_one_prunes_it(tmp_path: Path
                                                                       ) -> None:
    old, new = _random_index(1), _random_index(2)
    k_old, k_new = CacheKey("arch", "9", "a", 2), CacheKey("arch", "10", "b", 2)
    # a copied folder of another archive, at any generation, is not this archive's to keep
    k_foreign = CacheKey("other", "99", "d", 2)
    publish_cache(tmp_path, "index", CACHE_FORMAT, k_foreign,
                  lambda f: new.save(f, with_mih=False))
    publish_cache(tmp_path, "index", CACHE_FORMAT, k_new, lambda f: new.save(f, with_mih=False))
    assert open_cache(tmp_path, "index", CACHE_FORMAT, k_foreign) is None
    publish_cache(tmp_path, "index", CACHE_FORMAT, k_old, lambda f: old.save(f, with_mih=False))
    assert open_cache(tmp_path, "index", CACHE_FORMAT, k_new) is not None
    assert open_cache(tmp_path, "index", CACHE_FORMAT, k_old) is not None
    k_newer = CacheKey("arch", "11", "c", 2)
    publish_cache(tmp_path, "index", CACHE_FORMAT, k_newer,
                  lambda f: new.save(f, with_mih=False))
    assert open_cache(tmp_path, "index", CACHE_FORMAT, k_old) is None
    assert open_cache(tmp_path, "index", CACHE_FORMAT, k_new) is None
    assert open_cache(tmp_path, "index", CACHE_FORMAT, k_newer) is not None


def test_an_older_version_keeps_a_newer_versions_cache(tmp_path: Path) -> None:
    """Two imgverify versions sharing an archive's folder (a desk upgraded one machine of
    two) wrote the index cache in two formats and each deleted the other's, so both rebuilt
    on every run. The older format is still pruned by the newer version (upgrade hygiene);
    the newer format is no longer pruned by the older one."""
    index = _random_index(4)
    key = CacheKey("arch", "5", "t", 2)
    newer_fmt, older_fmt = CACHE_FORMAT + 1, CACHE_FORMAT
    publish_cache(tmp_path, "index", newer_fmt, key, lambda f: index.save(f, with_mih=False))
    publish_cache(tmp_path, "index", older_fmt, key, lambda f: index.save(f, with_mih=False))
    assert open_cache(tmp_path, "index", newer_fmt, key) is not None
    assert open_cache(tmp_path, "index", older_fmt, key) is not None
    # another archive's cache in a newer format is not kept for it
    foreign = CacheKey("other", "5", "t", 2)
    publish_cache(tmp_path, "index", newer_fmt + 1, foreign,
                  lambda f: index.save(f, with_mih=False))
    publish_cache(tmp_path, "index", older_fmt, key, lambda f: index.save(f, with_mih=False))
    assert open_cache(tmp_path, "index", newer_fmt + 1, foreign) is None
    # the newer version prunes the older format, as on an upgrade
    publish_cache(tmp_path, "index", newer_fmt, key, lambda f: index.save(f, with_mih=False))
    assert open_cache(tmp_path, "index", older_fmt, key) is None
    assert open_cache(tmp_path, "index", newer_fmt, key) is not None


@pytest.mark.parametrize("victim", ["pdq.npy", "ref_keys.npy", "manifest.json"])
def test_a_truncated_cache_file_is_never_read(tmp_path: Path, victim: str) -> None:
    index = _random_index(5)
    key = CacheKey("arch", "1", "token", 2)
    folder = publish_cache(tmp_path, "index", CACHE_FORMAT, key,
                           lambda f: index.save(f, with_mih=False))
    assert folder is not None and open_cache(tmp_path, "index", CACHE_FORMAT, key) is not None
    target = folder / victim
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 64])
    assert open_cache(tmp_path, "index", CACHE_FORMAT, key) is None


def test_a_damaged_cache_file_is_never_read(tmp_path: Path) -> None:
    """Same size, other bytes: the CRC-32 in the manifest catches it."""
    index = _random_index(6)
    key = CacheKey("arch", "1", "token", 2)
    folder = publish_cache(tmp_path, "index", CACHE_FORMAT, key,
                           lambda f: index.save(f, with_mih=False))
    assert folder is not None
    target = folder / "pdq.npy"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    assert open_cache(tmp_path, "index", CACHE_FORMAT, key) is None


def test_archive_rebuilds_over_a_truncated_cache(tmp_path: Path, caching: None) -> None:
    photos = coco(6)
    path = tmp_path / "desk.sqlite"
    _build(path, photos, 2016)
    with imgverify.Archive.open(path) as arch:
        expected = imgverify.check(_reencoded(photos[1]), arch)
    assert expected.verdict == "likely_recycled"
    cache = path.with_name(path.name + ".index")
    for npy in cache.glob("index-*/*.npy"):
        npy.write_bytes(npy.read_bytes()[:100])
    for faiss_file in cache.glob("features-*/features.faiss"):
        faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    with imgverify.Archive.open(path) as arch:
        again = imgverify.check(_reencoded(photos[1]), arch)
        crop = imgverify.check(_cropped(photos[1]), arch)
    assert again.verdict == "likely_recycled"
    assert again.matches[0].reference_id == expected.matches[0].reference_id
    assert crop.matches and crop.matches[0].reference_id == expected.matches[0].reference_id


def _publish_big(root: Path, key: CacheKey) -> Path:
    """A cache with one 4 MB file (its checksum sampled) and one small file (checked whole)."""
    rows = np.random.default_rng(3).integers(0, 2**31, size=(1 << 20), dtype=np.int32)

    def write(folder: Path) -> dict[str, Any]:
        np.save(folder / "postings.npy", rows)
        np.save(folder / "ref_keys.npy", np.arange(100, dtype=np.int64))
        return {}

    folder = publish_cache(root, "local", 1, key, write, sample_over=1 << 20)
    assert folder is not None
    return folder


@pytest.mark.parametrize("where", ["first", "middle", "last", "small_file", "truncated"])
def test_a_sampled_checksum_catches_damage_where_it_looks(tmp_path: Path, where: str) -> None:
    """Large local-index files are checked on open by size and spread blocks, not read whole
    (a desk's one check would otherwise read the whole index): damage in a sampled block,
    a truncation, or any damage to a small file keeps the cache from being read."""
    import json

    key = CacheKey("arch", "1", "token", 2)
    folder = _publish_big(tmp_path, key)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert "sampled_crc32" in files["postings.npy"] and "crc32" not in files["postings.npy"]
    assert "crc32" in files["ref_keys.npy"]
    assert open_cache(tmp_path, "local", 1, key, sampled_ok=True) is not None
    # a caller whose cache attributes never accepts a sampled check
    assert open_cache(tmp_path, "local", 1, key) is None
    target = folder / ("ref_keys.npy" if where == "small_file" else "postings.npy")
    data = bytearray(target.read_bytes())
    if where == "truncated":
        del data[-1]
    else:
        # the 128th of 256 sampled blocks starts at (size - 64 KB) * 127 // 255
        at = {"first": 10, "middle": (len(data) - 65536) * 127 // 255 + 100,
              "last": len(data) - 3, "small_file": len(data) - 3}[where]
        data[at] ^= 0xFF
    target.write_bytes(bytes(data))
    assert open_cache(tmp_path, "local", 1, key, sampled_ok=True) is None


def test_the_compact_local_cache_is_published_with_sampled_checksums(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local index asks for sampled checks (its damage costs recall, never attribution);
    the hash index, whose reference keys attribute, keeps full ones. Damage in a sampled
    block of a published compact cache still keeps it from being opened."""
    import json

    import imgverify.store.local_index as local_index
    from imgverify.signals.compact import CompactFeatureIndex
    from imgverify.signals.vocabulary import default_vocabulary

    vocab = default_vocabulary()
    rng = np.random.default_rng(1)
    n = 6_000
    words, rows = rng.integers(0, vocab.words, n), rng.integers(0, 500, n)
    compact = CompactFeatureIndex.from_postings(
        np.arange(500, dtype=np.int64), np.bincount(rows, minlength=500).astype(np.uint16),
        words, rows, rng.integers(0, 1 << 16, n).astype(np.uint16), lambda keys: {}, vocab)
    monkeypatch.setattr(local_index, "SAMPLED_CHECK_OVER", 8 << 10)
    key = CacheKey("arch", "1", "token", 2)
    folder = local_index.publish_compact(tmp_path, key, compact)
    assert folder is not None
    files = json.loads((folder / "manifest.json").read_text())["files"]
    sampled = [name for name, info in files.items() if "sampled_crc32" in info]
    assert "postings.npy" in sampled, files
    assert local_index.open_compact(tmp_path, key, lambda keys: {}) is not None
    target = folder / "postings.npy"
    data = bytearray(target.read_bytes())
    data[200] ^= 0xFF
    target.write_bytes(bytes(data))
    assert local_index.open_compact(tmp_path, key, lambda keys: {}) is None
    index = _random_index(4)
    folder = publish_cache(tmp_path, "index", CACHE_FORMAT, key,
                           lambda f: index.save(f, with_mih=False))
    assert folder is not None
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert all("crc32" in info for info in files.values())
