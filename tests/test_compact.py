"""The compact local-feature index (large archives): crops still found on both backends,
built ahead by `archive index` / ingest, references added since searched exactly, removed ones
never cited, and its cache keyed to its archive.

The archives here are small; each test lowers the archive's `compact_min_refs` so the
compact index serves them, which is the only difference from a large archive's path.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import bsds, coco, manifest_rows, write_manifest
from PIL import Image
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.ingest import ingest_manifest
from imgverify.signals.compact import CompactFeatureIndex, LayeredLocalIndex
from imgverify.store.local_index import PendingLocalIndex, latest_compact

FOUND = ("likely_recycled", "possibly_recycled")


def crop_jpeg(photo: Path, keep: float = 0.5) -> bytes:
    """A centre crop keeping `keep` of each side's length... of the area, re-encoded."""
    im = Image.open(photo).convert("RGB")
    side = keep ** 0.5
    w, h = im.size
    box = (int(w * (1 - side) / 2), int(h * (1 - side) / 2),
           int(w * (1 + side) / 2), int(h * (1 + side) / 2))
    buf = io.BytesIO()
    im.crop(box).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def photos() -> list[Path]:
    return coco(12) + bsds(12)


def test_crops_are_found_through_the_compact_index(location: str, tmp_path: Path) -> None:
    ps = photos()
    with imgverify.Archive.open(location) as arch:
        arch.compact_min_refs = 0
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(ps[:20])))
        index = arch.feature_index()
        assert isinstance(index, CompactFeatureIndex)  # built by the ingest, not by a query
        assert index.references == 20
        for i in (0, 5, 13, 19):
            r = imgverify.check(crop_jpeg(ps[i], 0.45), arch)
            assert r.verdict in FOUND, (ps[i].name, r.verdict)
            assert r.matches[0].caption == f"Caption {i}"
            assert "local_features" in (r.matches[0].method or "")
        for p in ps[20:]:  # not archived: nothing
            assert imgverify.check(crop_jpeg(p, 0.45), arch).verdict == "no_match"


def test_references_added_since_the_build_are_searched_and_removed_never_cited(
        location: str, tmp_path: Path) -> None:
    ps = photos()
    with imgverify.Archive.open(location) as arch:
        arch.compact_min_refs = 0
        ingest_manifest(arch, write_manifest(tmp_path / "a.csv", manifest_rows(ps[:16])))
        rows = manifest_rows(ps)[16:20]
        ingest_manifest(arch, write_manifest(tmp_path / "b.csv", rows), build_index=False)
        index = arch.feature_index()
        assert isinstance(index, LayeredLocalIndex)  # the build plus an exact delta
        r = imgverify.check(crop_jpeg(ps[18], 0.45), arch)
        assert r.verdict in FOUND and r.matches[0].caption == "Caption 18"
        # the new references' exact votes must not crowd the base's candidates out
        old = imgverify.check(crop_jpeg(ps[3], 0.45), arch)
        assert old.verdict in FOUND and old.matches[0].caption == "Caption 3"
        gone = r.matches[0].reference_id
        assert arch.remove([gone]) == 1
        again = imgverify.check(crop_jpeg(ps[18], 0.45), arch)
        assert all(m.reference_id != gone for m in again.matches)
        old = imgverify.check(crop_jpeg(ps[3], 0.45), arch)  # in the base, still found
        assert old.verdict in FOUND and old.matches[0].caption == "Caption 3"
        info = arch.build_local_index()
        assert info["references"] == 19 and isinstance(arch.feature_index(),
                                                       CompactFeatureIndex)


def test_bytes_per_reference_stay_under_a_kilobyte(tmp_path: Path) -> None:
    """Structure, not timing: postings (row + embedding) and per-reference arrays; the word
    offsets are a fixed 8 MB whatever the size, so they are left out here."""
    with imgverify.Archive(tmp_path / "a.sqlite") as arch:
        arch.compact_min_refs = 0
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(photos())))
        index = arch.feature_index()
        assert isinstance(index, CompactFeatureIndex)
        per_ref = (index.nbytes - index.offsets.nbytes) / index.references
        assert per_ref <= 1024, per_ref


def test_the_cache_is_reused_and_never_read_for_another_archive(tmp_path: Path) -> None:
    ps = photos()
    path = tmp_path / "a.sqlite"
    with imgverify.Archive(path) as arch:
        arch.compact_min_refs = 0
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(ps[:20])))
        built = arch.feature_index()
        archive_id = arch.archive_id()
    cache = path.with_name(path.name + ".index")
    assert any(d.name.startswith("local-") for d in cache.iterdir())
    with imgverify.Archive(path, readonly=True) as again:
        again.compact_min_refs = 0
        loaded = again.feature_index()
        assert isinstance(loaded, CompactFeatureIndex)
        assert isinstance(loaded.postings, np.memmap)  # read from the cache, not rebuilt
        assert np.array_equal(np.asarray(loaded.postings), np.asarray(built.postings))
    # another archive with this cache folder copied beside it: never read
    other = tmp_path / "b.sqlite"
    with imgverify.Archive(other) as b:
        b.compact_min_refs = 0
        ingest_manifest(b, write_manifest(tmp_path / "n.csv", manifest_rows(ps[20:])),
                        build_index=False)
        shutil.copytree(cache, other.with_name(other.name + ".index"))
        assert archive_id is not None
        assert latest_compact(other.with_name(other.name + ".index"), b.archive_id() or "",
                              b.hash_pipeline(), b.features_of) is None
        assert isinstance(b.feature_index(), PendingLocalIndex)  # never built for b
        b.build_local_index()
        index = b.feature_index()
        assert isinstance(index, CompactFeatureIndex) and index.references == 4
        r = imgverify.check(crop_jpeg(ps[2], 0.45), b)  # archived in a, not in b
        assert r.verdict == "no_match"


def test_a_never_indexed_archive_is_not_indexed_on_a_query(location: str,
                                                           tmp_path: Path) -> None:
    """Issue 16: the compact index of a large archive is built by `archive index`, an
    ingest or a service's/scan's warm-up, never on a user's query (minutes at a million
    references). A check before that still answers at once, searches the whole picture, and
    says that crops were not searched; `archive index` (another process) makes them found."""
    ps = photos()
    with imgverify.Archive.open(location) as arch:
        arch.compact_min_refs = 0
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(ps[:12])),
                        build_index=False)
        assert isinstance(arch.feature_index(), PendingLocalIndex)
        crop = crop_jpeg(ps[4], 0.45)
        r = imgverify.check(crop, arch)
        assert r.verdict == "no_match"
        assert any("were not searched" in n and "archive index" in n for n in r.notes)
        assert isinstance(arch.feature_index(), PendingLocalIndex)  # the query built nothing
        whole = imgverify.check(ps[5].read_bytes(), arch)  # the global stage still works
        assert whole.verdict == "likely_recycled"
        assert not any("were not searched" in n for n in whole.notes)
        # `archive index` in another process; this one picks the build up on its next query
        import subprocess
        import sys

        code = ("import sys, imgverify\n"
                "a = imgverify.Archive.open(sys.argv[1])\n"
                "a.compact_min_refs = 0\n"
                "print(a.build_local_index()['references'])\n")
        out = subprocess.run([sys.executable, "-c", code, location], capture_output=True,
                             text=True, timeout=240)
        assert out.returncode == 0 and out.stdout.strip() == "12", out.stderr
        again = imgverify.check(crop, arch)
        assert again.verdict in FOUND and again.matches[0].caption == "Caption 4"
        assert not any("were not searched" in n for n in again.notes)


def test_checks_of_a_never_indexed_archive_do_not_count_its_features_again(
        tmp_path: Path) -> None:
    """A pending local index is looked for again on every check (so an `archive index` run
    elsewhere is picked up at once), but while the archive is unchanged it is known to be
    large: the COUNT(*) over the features table (a full scan, about a second at ten million
    rows) is not repeated. Read off SQLite's own statement trace."""
    ps = photos()
    with _never_indexed(tmp_path, ps[:6]) as arch:
        with _statements(arch) as statements:
            for p in ps[6:9]:
                r = imgverify.check(crop_jpeg(p, 0.5), arch)
                assert r.searched["local_features"] == "pending"
        assert not [s for s in statements if "COUNT(*) FROM features" in s], statements
        # a change to the archive counts again (it may have become small or large)
        ingest_manifest(arch, write_manifest(tmp_path / "n.csv", manifest_rows(ps[6:7])),
                        build_index=False)
        with _statements(arch) as statements:
            assert isinstance(arch.feature_index(), PendingLocalIndex)
        assert [s for s in statements if "COUNT(*) FROM features" in s]


def _never_indexed(folder: Path, ps: list[Path]) -> imgverify.Archive:
    """An archive treated as large (compact local index) whose local index was never
    built."""
    arch = imgverify.Archive(folder / "a.sqlite")
    arch.compact_min_refs = 0
    ingest_manifest(arch, write_manifest(folder / "m.csv", manifest_rows(ps)),
                    build_index=False)
    assert isinstance(arch.feature_index(), PendingLocalIndex)
    return arch


@contextmanager
def _statements(arch: imgverify.Archive) -> Iterator[list[str]]:
    """The SQL statements this thread's connection runs meanwhile (SQLite's own trace)."""
    seen: list[str] = []
    arch._conn().set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        arch._conn().set_trace_callback(None)


def test_warm_up_builds_a_never_built_local_index(tmp_path: Path) -> None:
    """A service or batch scan prepares before its first request: `warm_up` builds it."""
    from imgverify.checker import warm_up

    ps = photos()
    with _never_indexed(tmp_path, ps[:8]) as arch:
        warm_up(arch)
        assert isinstance(arch.feature_index(), CompactFeatureIndex)
        r = imgverify.check(crop_jpeg(ps[6], 0.45), arch)
        assert r.verdict in FOUND and r.matches[0].caption == "Caption 6"


def test_a_scan_builds_a_never_built_local_index_before_its_workers_and_no_local_never(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan with several workers builds a never-built local index once, before its workers
    start, rather than in every worker at once (minutes each at a million references); a
    --no-local scan builds none, since it never reads it."""
    from imgverify.store.sqlite import Archive

    monkeypatch.setattr(Archive, "compact_min_refs", 0)  # this small archive counts as large
    ps = photos()
    path = tmp_path / "a.sqlite"
    with imgverify.Archive(path) as arch:
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(ps[:8])),
                        build_index=False)
        assert isinstance(arch.feature_index(), PendingLocalIndex)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "crop.jpg").write_bytes(crop_jpeg(ps[6], 0.45))
    runs = {}
    for name, extra in (("fast", ["--no-local", "--workers", "1"]), ("full", ["--workers", "2"])):
        out = tmp_path / f"{name}.jsonl"
        res = CliRunner().invoke(app, ["scan", str(folder), "--archive", str(path), "--out",
                                       str(out), "--no-progress", *extra])
        assert res.exit_code == 0, res.output
        runs[name] = json.loads(out.read_text().splitlines()[0])
        with imgverify.Archive(path) as arch:
            index = arch.feature_index()
        if name == "fast":
            assert isinstance(index, PendingLocalIndex)  # the --no-local scan built nothing
            assert runs[name]["searched"]["local_features"] == "off"
        else:
            assert isinstance(index, CompactFeatureIndex)  # built by the scan, for everyone
            assert runs[name]["verdict"] in FOUND
            assert runs[name]["matches"][0]["caption"] == "Caption 6"


def test_archive_index_command(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    with imgverify.Archive(path) as arch:
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(photos()[:6])))
    out = CliRunner().invoke(app, ["archive", "index", "--archive", str(path),
                                   "--no-progress"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)["local_index"]
    assert info["references_with_features"] == 6
    assert info["kind"] == "FeatureIndex"  # small: exact, in memory
    missing = tmp_path / "typo.sqlite"
    out = CliRunner().invoke(app, ["archive", "index", "--archive", str(missing)])
    assert out.exit_code == 4 and "no archive at" in out.output and not missing.exists()


@pytest.mark.parametrize("n", [0])
def test_empty_query_votes_for_nothing(n: int, tmp_path: Path) -> None:
    with imgverify.Archive(tmp_path / "a.sqlite") as arch:
        arch.compact_min_refs = n
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(photos()[:3])))
        flat = Image.new("RGB", (400, 300), (120, 120, 120))
        assert imgverify.check(flat, arch).verdict == "no_match"


@pytest.mark.parametrize("max_distance", [0, 1, 3, 4, -1])
def test_bucketed_lists_give_exactly_the_postings_of_a_full_scan(max_distance: int) -> None:
    """Long lists are sorted and bucketed by embedding (`finish_lists`); the scan that skips
    buckets must return the same (lookup, row, distance) set as reading every posting.
    -1: each lookup has its own distance (0 to 4), as the chance-hit budget gives them."""
    from imgverify.signals.compact import (
        _POPCOUNT16,
        bucket_bits,
        finish_lists,
        scan_postings,
    )

    rng = np.random.default_rng(max_distance + 1)
    # lists from empty to far above the longest bucketed length, in one index
    lengths = np.array([0, 1, 5, 255, 256, 300, 1000, 4097, 20000, 200000], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = rng.integers(0, 50_000, offsets[-1]).astype(np.uint32)
    # clustered embeddings (as within a word), so some buckets are crowded and some empty
    he = (rng.integers(0, 1 << 16, offsets[-1]) & rng.choice([0xFFFF, 0xF0FF, 0x0FF0],
                                                            offsets[-1])).astype(np.uint16)
    plain_rows, plain_he = rows.copy(), he.copy()
    buckets = finish_lists(offsets, rows, he)
    bits = bucket_bits(lengths)
    assert bits[-1] > 0 and bits[0] == 0
    starts = np.concatenate([[0], np.cumsum(np.where(bits > 0, (1 << bits) + 1, 0))])
    for w in range(len(lengths)):  # each list holds the same postings, now sorted
        s, e = offsets[w], offsets[w + 1]
        assert np.all(np.diff(he[s:e].astype(np.int64)) >= 0)
        assert sorted(zip(rows[s:e], he[s:e], strict=True)) \
            == sorted(zip(plain_rows[s:e], plain_he[s:e], strict=True))
    words = rng.integers(0, len(lengths), 400)
    query_he = rng.integers(0, 1 << 16, 400).astype(np.uint16)
    limit = rng.integers(0, 5, 400) if max_distance < 0 else np.full(400, max_distance)
    k, got_rows, got_d = scan_postings(offsets[words], lengths[words], query_he, bits[words],
                                       starts[words], buckets, he, rows,
                                       limit if max_distance < 0 else max_distance)
    expect: Counter[tuple[int, int, int]] = Counter()
    for i, w in enumerate(words):
        s, e = offsets[w], offsets[w + 1]
        d = _POPCOUNT16[plain_he[s:e] ^ query_he[i]]
        for j in np.flatnonzero(d <= limit[i]):
            expect[(i, int(plain_rows[s + j]), int(d[j]))] += 1
    # the same multiset: every agreeing posting once, nothing else
    assert Counter(zip(k.tolist(), got_rows.tolist(), got_d.tolist(), strict=True)) == expect
    assert sum(expect.values()) > 20


def test_warm_up_compiles_the_posting_scan(tmp_path: Path) -> None:
    """A service warms up (`checker.warm_up`) before its first request; with a compact index
    that includes compiling its scan for the index's own array types (a memory-mapped,
    read-only index is a type of its own), so the first real query compiles nothing."""
    import subprocess
    import sys

    path = tmp_path / "a.sqlite"
    with imgverify.Archive(path) as arch:
        arch.compact_min_refs = 0
        ingest_manifest(arch, write_manifest(tmp_path / "m.csv", manifest_rows(photos()[:6])))
    code = ("import sys, imgverify\n"
            "from imgverify.signals import compact\n"
            "a = imgverify.Archive.open(sys.argv[1])\n"
            "a.compact_min_refs = 0\n"
            "before = compact._compiled_scan.cache_info().currsize\n"
            "a.feature_index().warm()\n"
            "warmed = len(compact._compiled_scan().signatures)\n"
            "r = imgverify.check(sys.argv[2], a)\n"
            "print(type(a.feature_index()).__name__, before, warmed,\n"
            "      len(compact._compiled_scan().signatures), r.verdict)\n")
    crop = tmp_path / "crop.jpg"
    crop.write_bytes(crop_jpeg(photos()[2], 0.45))
    out = subprocess.run([sys.executable, "-c", code, str(path), str(crop)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    # compiled once, at warm-up; the first real query (found by local features) reuses it
    assert out.stdout.split()[:4] == ["CompactFeatureIndex", "0", "1", "1"], out.stdout
    assert out.stdout.split()[4] in FOUND


def test_postgres_compact_index_is_read_by_the_next_process_not_rebuilt(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL has no file to keep a cache beside, so the compact index an ingest or
    `archive index` builds goes to the local cache directory; a later process (a CLI check,
    a scan worker) reads it, folds in what changed since, and never builds on its first
    query. Another database's cache there is never read."""
    import subprocess
    import sys

    cache = tmp_path / "cache"
    monkeypatch.setenv("IMGVERIFY_CACHE_DIR", str(cache))
    ps = photos()
    with imgverify.Archive.open(pg_url) as arch:
        arch.compact_min_refs = 0
        ingest_manifest(arch, write_manifest(tmp_path / "a.csv", manifest_rows(ps[:16])))
        rows = manifest_rows(ps)[16:20]  # added after the build, not indexed
        ingest_manifest(arch, write_manifest(tmp_path / "b.csv", rows), build_index=False)
        archive_id = arch.archive_id()
    published = list(cache.glob(f"postgres-{archive_id}/local-f*"))
    assert len(published) == 1
    code = ("import sys, imgverify\n"
            "from imgverify.signals import compact\n"
            "calls = []\n"
            "real = compact.CompactFeatureIndex.build\n"
            "compact.CompactFeatureIndex.build = classmethod(\n"
            "    lambda cls, *a, **k: calls.append(1) or real.__func__(cls, *a, **k))\n"
            "a = imgverify.Archive.open(sys.argv[1])\n"
            "a.compact_min_refs = 0\n"
            "new = imgverify.check(sys.argv[2], a)\n"
            "old = imgverify.check(sys.argv[3], a)\n"
            "ix = a.feature_index()\n"
            "print(type(ix).__name__, type(ix.base.postings).__name__, len(calls),\n"
            "      new.verdict, new.matches[0].caption.replace(' ', '_'),\n"
            "      old.verdict, old.matches[0].caption.replace(' ', '_'))\n")
    new_crop, old_crop = tmp_path / "new.jpg", tmp_path / "old.jpg"
    new_crop.write_bytes(crop_jpeg(ps[18], 0.45))
    old_crop.write_bytes(crop_jpeg(ps[3], 0.45))
    out = subprocess.run([sys.executable, "-c", code, pg_url, str(new_crop), str(old_crop)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    kind, postings, builds, v_new, c_new, v_old, c_old = out.stdout.split()
    assert (kind, postings, builds) == ("LayeredLocalIndex", "memmap", "0"), out.stdout
    assert v_new in FOUND and c_new == "Caption_18"  # from the delta
    assert v_old in FOUND and c_old == "Caption_3"  # from the cached base
    # a cache folder copied under another database's name is never read for it
    with imgverify.Archive.open(pg_url) as arch:
        arch.compact_min_refs = 0
        other = cache / "postgres-0123456789abcdef"
        shutil.copytree(published[0].parent, other)
        assert arch._cached_compact(10**9) is not None
        monkeypatch.setattr(arch, "archive_id", lambda: "0123456789abcdef")
        assert arch._cached_compact(10**9) is None  # its manifest names the real id


def test_long_lists_allow_fewer_embedding_bits_within_the_chance_budget() -> None:
    """The per-lookup chance-hit budget: a short list keeps the full allowance (a small
    archive votes as before), a longer one allows fewer bits so that the postings that
    agree by chance stay within HE_HIT_BUDGET, down to HE_MIN_DISTANCE, never below."""
    from imgverify.signals.compact import (
        _CHANCE_SHARE,
        HE_HIT_BUDGET,
        HE_MAX_DISTANCE,
        HE_MIN_DISTANCE,
        distance_limits,
    )

    lengths = np.unique(np.geomspace(1, 10_000_000, 400).astype(np.int64))
    limits = distance_limits(lengths)
    assert limits[0] == HE_MAX_DISTANCE and limits[-1] == HE_MIN_DISTANCE
    assert np.all(np.diff(limits) <= 0)  # never more bits for a longer list
    chance = lengths * _CHANCE_SHARE[limits]
    assert np.all((chance <= HE_HIT_BUDGET) | (limits == HE_MIN_DISTANCE))
    # each list keeps the widest allowance the budget admits
    wider = np.minimum(limits + 1, HE_MAX_DISTANCE)
    assert np.all((limits == HE_MAX_DISTANCE) | (lengths * _CHANCE_SHARE[wider] > HE_HIT_BUDGET))


def test_vote_counting_matches_a_full_count_and_leaves_no_residue() -> None:
    """`rows_with_votes` counts in a per-thread byte array it clears after each call: the
    same mask as a full bincount, call after call, with more than 255 hits on one row."""
    from imgverify.signals.compact import rows_with_votes

    rng = np.random.default_rng(7)
    for call in range(6):
        rows = np.concatenate([rng.integers(0, 5000, 3000), np.full(300 * (call % 2), 17)])
        for min_votes in (1, 2, 4, 300):
            expect = np.bincount(rows, minlength=5000)[rows] >= min_votes
            assert np.array_equal(rows_with_votes(rows, min_votes, 5000), expect)
    assert not rows_with_votes(np.zeros(0, np.int64), 4, 5000).size


def test_poisson_tail_bounds_the_exact_tail_tightly_where_chance_is_small() -> None:
    import math

    from imgverify.signals.compact import poisson_log_tail

    for lam in (1e-4, 0.01, 0.3, 2.0, 9.0):
        for k in range(1, 40):
            exact = 1.0 - sum(math.exp(-lam) * lam ** i / math.factorial(i) for i in range(k))
            got = float(poisson_log_tail(np.array([k]), np.array([lam]))[0])
            if exact <= 1e-12:  # below float resolution of 1 - sum: compare with the terms
                exact = sum(math.exp(-lam) * lam ** i / math.factorial(i)
                            for i in range(k, k + 60))
            assert got >= math.log(exact) - 1e-9  # never below: chance is not understated
            if lam / (k + 1) <= 0.5:
                assert got - math.log(exact) < math.log(2.0)


def test_a_probe_at_a_million_references_is_not_passed_by_chance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists shared by a million references hand hundreds of them two probe votes by chance;
    the count-based bar keeps only a reference with more votes than chance gives any."""
    from imgverify.signals import compact as C
    from imgverify.signals.features import LocalFeatures
    from imgverify.signals.vocabulary import default_vocabulary

    rng = np.random.default_rng(3)
    vocab = default_vocabulary()
    desc = rng.integers(0, 256, (160, 32), dtype=np.uint8)
    q_idx, words = C.query_words(vocab, desc)
    query_he = vocab.embed(desc[q_idx], words)
    n, per_list = 1_000_000, 3000
    rows = rng.integers(1, n, (words.size, per_list))
    he = rng.integers(0, 1 << 16, (words.size, per_list)).astype(np.uint16)
    planted = np.unique(q_idx, return_index=True)[1][:6]  # six descriptors' first words
    rows[planted, 0] = 0
    he[planted, 0] = query_he[planted]
    all_words = np.repeat(words, per_list)
    ix = C.CompactFeatureIndex.from_postings(
        np.arange(n, dtype=np.int64), np.bincount(rows.ravel(), minlength=n).astype(np.uint16),
        all_words, rows.ravel(), he.ravel(), lambda keys: {}, vocab)
    query = LocalFeatures(np.zeros((160, 2), np.float32), desc, 640, 480)
    counted = ix.vote(query, top=10_000, min_votes=ix.probe_votes)
    monkeypatch.setattr(C, "CHANCE_REFERENCES", float("inf"))
    by_ratio = ix.vote(query, top=10_000, min_votes=ix.probe_votes)
    assert len(by_ratio) > 20, len(by_ratio)  # chance alone passes the ratio test
    assert counted and counted[0][0] == 0 and counted[0][1] >= 6
    assert len(counted) <= 3, counted
    monkeypatch.undo()
    # the matcher asks `probe`: the planted reference passes it, and once it and the few
    # chance passers are stale (replaced since the build), a layered index's probe fails
    from imgverify.signals.features import FeatureIndex

    assert ix.probe(query)
    stale = {k for k, _ in counted}
    assert not LayeredLocalIndex(ix, FeatureIndex([], []), stale).probe(query)
    assert LayeredLocalIndex(ix, FeatureIndex([], []), stale - {0}).probe(query)


def test_the_newest_of_several_compact_caches_is_the_one_layered(tmp_path: Path) -> None:
    """A writer on an older state that publishes late leaves its cache beside a newer one
    (pruning keeps newer generations); the newest is used, whatever the names' order
    ("g10" sorts before "g9")."""
    from imgverify.signals.vocabulary import default_vocabulary
    from imgverify.store.cache import CacheKey
    from imgverify.store.local_index import publish_compact

    vocab = default_vocabulary()
    rng = np.random.default_rng(1)

    def tiny(n: int) -> CompactFeatureIndex:
        words = rng.integers(0, vocab.words, 50)
        rows = rng.integers(0, n, 50)
        return CompactFeatureIndex.from_postings(
            np.arange(n, dtype=np.int64) + 100, np.bincount(rows, minlength=n).astype(np.uint16),
            words, rows, rng.integers(0, 1 << 16, 50).astype(np.uint16), lambda keys: {},
            vocab)

    newer, older = CacheKey("arch", "10", "b", 2), CacheKey("arch", "9", "a", 2)
    assert publish_compact(tmp_path, newer, tiny(7)) is not None
    assert publish_compact(tmp_path, older, tiny(5)) is not None  # late: keeps the newer
    found = latest_compact(tmp_path, "arch", 2, lambda keys: {})
    assert found is not None
    index, key = found
    assert key == newer and index.references == 7
