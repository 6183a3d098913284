"""PDQ hash lists: import and export in the formats hash-sharing programmes use, and
hash-only references that match by PDQ alone and say that no image was there to verify.

Real photos (../shared/data), real hash lists from Meta's ThreatExchange repository
(../shared/data/pdq-reference), a real PostgreSQL server for the shared backend.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    PDQ_REF,
    PHOTOS,
    coco,
    manifest_rows,
    require,
    write_manifest,
)
from PIL import Image
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.ingest import ingest_manifest
from imgverify.ingest.hashlists import (
    EXPORT_FORMATS,
    UNKNOWN_QUALITY,
    SkippedRow,
    import_hash_list,
    parse_pdq,
    read_hash_list,
    write_hash_list,
)
from imgverify.match.verdict import DEFAULT_THRESHOLDS, HASH_ONLY_NOTE
from imgverify.media.load import load
from imgverify.signals.hashing import HashSet, PictureHasher, hex_of
from imgverify.store.index import PDQ_ONLY_PART, HashIndex
from imgverify.store.manifest import RowError
from imgverify.store.sqlite import HashOnlyReference, hash_key

runner = CliRunner()
HAYSTACK = PDQ_REF / "pdq" / "data" / "reg-test-input" / "needles.txt"
CONTEXT = {"date": "2019-03-01", "event": "Flood in the old town", "place": "Lund",
           "caption": "Street under water", "source": "Hash-sharing programme X",
           "source_url": "https://example.org/list/1", "credit": "Agency Y",
           "license": "CC BY 4.0", "published": "2019-03-02"}


def pdq_of(path: Path | bytes) -> tuple[str, int]:
    """The PDQ (hex) and quality of a picture's full frame, as `imgverify hash` gives them."""
    loaded = load(path)
    hs = PictureHasher(loaded.image, loaded.scale).hashset(0)
    return hex_of(hs.pdq, 256), hs.pdq_quality


def jpeg(path: Path, quality: int = 50, scale: float = 1.0) -> bytes:
    im = Image.open(path).convert("RGB")
    if scale != 1.0:
        im = im.resize((int(im.width * scale), int(im.height * scale)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def pg_location(pg_url: str) -> str:
    """A fresh PostgreSQL schema (conftest's pg_url), dropped afterwards."""
    return pg_url


def import_file(archive: Any, path: Path, fmt: str, **defaults: str) -> Any:
    return import_hash_list(archive, path, fmt, defaults)


# -- formats ------------------------------------------------------------------------------------
def test_threatexchange_hash_list_imports_every_hash() -> None:
    """needles.txt from ThreatExchange's PDQ test data: one bare hash per line."""
    path = require(HAYSTACK)
    lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
    items = list(read_hash_list(path, "pdq-lines", {"date": "2020-01-01"}))
    assert [type(i) for i in items] == [HashOnlyReference] * len(lines)
    assert [hex_of(i.pdq, 256) for i in items] == [x.lower() for x in lines]  # type: ignore[union-attr]
    assert {i.pdq_quality for i in items} == {UNKNOWN_QUALITY}  # type: ignore[union-attr]
    assert {i.context["date"] for i in items} == {"2020-01-01"}  # type: ignore[union-attr]


def test_hasher_tool_output_shapes(tmp_path: Path) -> None:
    """`<hex>,<quality>,<file>` (Java / pure-Python tools), `<hex>,<file>` (C++), a TSV, and
    a header line."""
    a, b, c = ("f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22",
               "b0a10efd71cc3f429413d48d0ffffe12e34e0e17ada952a9d29684210aa9e5af",
               "adad5a64b5a142e55362a09057dacd5ae63b847fc23794b766b319361fc93188")
    path = tmp_path / "hashes.csv"
    path.write_text(f"hash,quality,filename\n{a},100,bridge-1-original.jpg\n"
                    f"{b},bridge-2-rotate-90.jpg\n{c.upper()}\t87\tbridge 3.jpg\n")
    items = list(read_hash_list(path, "pdq-lines", {"date": "2021-06-01"}))
    assert all(isinstance(i, HashOnlyReference) for i in items)
    got = [(hex_of(i.pdq, 256), i.pdq_quality, i.context["caption"], i.line)  # type: ignore[union-attr]
           for i in items]
    assert got == [(a, 100, "bridge-1-original.jpg", 2), (b, UNKNOWN_QUALITY,
                   "bridge-2-rotate-90.jpg", 3), (c, 87, "bridge 3.jpg", 4)]
    te = tmp_path / "te.txt"  # python-threatexchange output given as plain lines
    te.write_text(f"pdq {a}\n")
    (item,) = read_hash_list(te, "pdq-lines", {"date": "2021-06-01"})
    assert isinstance(item, RowError) and item.line == 1 and "te format" in item.message


def test_malformed_rows_are_reported_with_line_numbers_and_the_rest_imported(
        tmp_path: Path) -> None:
    good = ["f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22",
            "b0a10efd71cc3f429413d48d0ffffe12e34e0e17ada952a9d29684210aa9e5af"]
    path = tmp_path / "list.txt"
    path.write_text("\n".join([
        good[0],
        "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b2",  # 63 digits
        "zz" * 32,
        "0" * 64,  # the degenerate hash of a flat picture
        f"{good[0][:-1]}0,30,dark.jpg",  # quality below Meta's floor of 50
        f"{good[0][:-1]}1,101",
        "",
        "# a comment",
        good[1] + ",90,fine.jpg",
    ]) + "\n")
    with imgverify.Archive.open(tmp_path / "a.sqlite") as arch:
        report = import_file(arch, path, "pdq-lines", date="2018-01-01")
        assert (report.added, report.updated, report.unchanged) == (2, 0, 0)
        assert [e.line for e in report.errors] == [2, 3, 4, 5, 6]
        assert "64 hex digits" in report.errors[0].message
        assert "degenerate" in report.errors[2].message
        assert "below 50" in report.errors[3].message
        assert "outside 0-100" in report.errors[4].message
        assert {r.sha256 for r in arch.iter_references()} == {"pdq:" + g for g in good}
        assert arch.integrity_check() == []


def test_missing_date_is_a_row_error_unless_defaulted(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "l.jsonl", [
        {"pdq": "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"},
        {"pdq": "b0a10efd71cc3f429413d48d0ffffe12e34e0e17ada952a9d29684210aa9e5af",
         "date": "yesterday"},
        {"pdq": "adad5a64b5a142e55362a09057dacd5ae63b847fc23794b766b319361fc93188",
         "date": "2017-02-03", "source_url": "javascript:alert(1)"},
        ["not", "an", "object"],
    ])
    items = list(read_hash_list(path, "jsonl"))
    assert all(isinstance(i, RowError) for i in items)
    assert [(i.line, i.message.split(" ")[0]) for i in items] == [  # type: ignore[union-attr]
        (1, "missing"), (2, "date"), (3, "source_url"), (4, "each")]
    fixed = list(read_hash_list(path, "jsonl", {"date": "2016-07-08"}))
    assert isinstance(fixed[0], HashOnlyReference) and fixed[0].context["date"] == "2016-07-08"
    assert isinstance(fixed[1], RowError)  # its own (bad) date wins over the default


def test_threatexchange_formats(tmp_path: Path) -> None:
    """`threatexchange dataset -P` lines (quoted collaboration, metadata after the signal),
    `-S` lines, the local-file collaboration format, and `dataset -P --csv`; other signal
    types are skipped and listed."""
    p1 = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
    p2 = "b0a10efd71cc3f429413d48d0ffffe12e34e0e17ada952a9d29684210aa9e5af"
    p3 = "adad5a64b5a142e55362a09057dacd5ae63b847fc23794b766b319361fc93188"
    lines = tmp_path / "dataset.txt"
    lines.write_text(
        f"'Sample Data' pdq {p1} FetchedSignalMetadata(tags={{'it's'}})\n"
        f"pdq {p2}\n"
        "video_md5 d41d8cd98f00b204e9800998ecf8427e\n"
        f"{p3}\n"
        "pdq\n")
    items = list(read_hash_list(lines, "te", {"date": "2022-02-02"}))
    assert [type(i).__name__ for i in items] == ["HashOnlyReference", "HashOnlyReference",
                                                 "SkippedRow", "HashOnlyReference", "RowError"]
    assert items[0].context["source"] == "Sample Data"  # type: ignore[union-attr]
    assert items[1].context["source"] is None  # type: ignore[union-attr]
    assert items[2].line == 3 and "video_md5" in items[2].message  # type: ignore[union-attr]
    assert items[4].line == 5  # type: ignore[union-attr]
    table = tmp_path / "dataset.csv"
    table.write_text("collab,signal_type,signal_str,category,tags\n"
                     f"Sample Data,pdq,{p1},POSITIVE_CLASS,flood archive\n"
                     "Sample Data,video_md5,d41d8cd98f00b204e9800998ecf8427e,POSITIVE_CLASS,\n"
                     f"Other,pdq,{p2[:-2]},INVESTIGATION_SEED,\n")
    items = list(read_hash_list(table, "te", {"date": "2022-02-02", "source": "TE export"}))
    assert [type(i).__name__ for i in items] == ["HashOnlyReference", "SkippedRow", "RowError"]
    first = items[0]
    assert isinstance(first, HashOnlyReference)
    assert first.context["source"] == "TE export"  # the default given wins over the collab
    assert first.context["caption"] == "ThreatExchange: POSITIVE_CLASS flood archive"
    assert [i.line for i in items] == [2, 3, 4]


def test_threatexchange_cli_reads_our_export_and_we_read_its_dataset(tmp_path: Path) -> None:
    """Interoperability with python-threatexchange itself: its CLI loads our `te` export as
    a local-file collaboration, and its `dataset -P` outputs (plain and --csv) come back as
    the same hashes with the collaboration as source."""
    pytest.importorskip("threatexchange", reason="python-threatexchange (test extra) absent")
    import subprocess
    import sys

    src, hexes = _hash_only_archive(tmp_path / "src.sqlite")
    exported = tmp_path / "desk.te"
    with exported.open("w") as out:
        write_hash_list(src.export(), "te", out)
    src.close()
    env = {"HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    cli = [sys.executable, "-c", "from threatexchange.cli.main import main; main()"]

    def te(*args: str) -> str:
        done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    te("config", "collab", "edit", "local_file", "--create", "--filename", str(exported),
       "Desk list")
    te("fetch")
    for name, output in (("plain.txt", te("dataset", "-P")),
                         ("one-type.txt", te("dataset", "-P", "-s", "pdq")),
                         ("table.csv", te("dataset", "-P", "--csv", "-c", "Desk list"))):
        path = tmp_path / name
        path.write_text(output)
        items = [i for i in read_hash_list(path, "te", {"date": "2020-02-02"})
                 if not isinstance(i, SkippedRow)]
        assert all(isinstance(i, HashOnlyReference) for i in items), items
        desk = [i for i in items if i.context["source"] == "Desk list"]  # type: ignore[union-attr]
        assert sorted(hex_of(i.pdq, 256) for i in desk) == sorted(hexes), name  # type: ignore[union-attr]


def test_hma_bank_content_shapes(tmp_path: Path) -> None:
    """The /c/bank/{bank}/signal body, a bank content record with include_signals, and a
    signals+metadata object; a JSON array is numbered by item."""
    p1 = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
    p2 = "b0a10efd71cc3f429413d48d0ffffe12e34e0e17ada952a9d29684210aa9e5af"
    p3 = "adad5a64b5a142e55362a09057dacd5ae63b847fc23794b766b319361fc93188"
    records = [
        {"pdq": p1},
        {"id": 12, "disable_until_ts": 0, "collab_metadata": {},
         "original_media_uri": "https://example.org/m/12.jpg",
         "bank": {"name": "FLOOD_2019", "matching_enabled_ratio": 1.0},
         "signals": {"pdq": p2, "video_md5": "d41d8cd98f00b204e9800998ecf8427e"}},
        {"signals": {"pdq": p3}, "metadata": {"content_id": "x1", "json": dict(CONTEXT)}},
        {"signals": {"video_md5": "d41d8cd98f00b204e9800998ecf8427e"}},
        {"signals": "nope"},
    ]
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(records, indent=2))
    items = list(read_hash_list(path, "hma", {"date": "2019-01-01"}))
    assert [type(i).__name__ for i in items] == ["HashOnlyReference"] * 3 + [
        "SkippedRow", "RowError"]
    assert [i.line for i in items] == [1, 2, 3, 4, 5]
    a, b, c = items[:3]
    assert isinstance(a, HashOnlyReference) and isinstance(b, HashOnlyReference)
    assert isinstance(c, HashOnlyReference)
    assert b.context["source"] == "FLOOD_2019"
    assert b.context["source_url"] == "https://example.org/m/12.jpg"
    assert {k: v for k, v in c.context.items() if v} == CONTEXT


# -- round trips --------------------------------------------------------------------------------
def _hash_only_archive(path: Path) -> tuple[Any, list[str]]:
    hexes = [x.strip() for x in require(HAYSTACK).read_text().splitlines()[:12]]
    arch = imgverify.Archive.open(path)
    batch = [HashOnlyReference(pdq=int(h, 16), pdq_quality=60 + i if i % 3 else UNKNOWN_QUALITY,
                               context={**CONTEXT, "event": f"Event {i}",
                                        "date": f"2015-01-{i + 1:02d}"})
             for i, h in enumerate(hexes)]
    assert arch.write_hashes(batch) == (12, 0, 0)
    return arch, hexes


@pytest.mark.parametrize("fmt", [*EXPORT_FORMATS, "csv", "jsonl"])
def test_export_then_import_round_trip(fmt: str, tmp_path: Path) -> None:
    src, _hexes = _hash_only_archive(tmp_path / "src.sqlite")
    photos = coco(2)
    ingest_manifest(src, write_manifest(tmp_path / "m.csv", manifest_rows(photos)))  # image refs
    exported = tmp_path / f"export.{fmt}"
    cli_fmt = fmt
    res = runner.invoke(app, ["archive", "export", "--archive", str(src.path), "--format",
                              cli_fmt])
    assert res.exit_code == 0, res.output
    exported.write_text(res.stdout)
    want = {r["pdq"]: r for r in src.export()}
    assert len(want) == 14
    with imgverify.Archive.open(tmp_path / "dst.sqlite") as dst:
        report = import_file(dst, exported, fmt, date="1999-09-09")
        assert (report.added, report.errors, report.skipped) == (14, [], [])
        got = {r["pdq"]: r for r in dst.export()}
        assert set(got) == set(want)
        for pdq, row in got.items():
            assert row["hash_only"] is True and row["image"] is None
            if fmt == "te":
                continue  # the local-file format carries the hash alone
            assert row["pdq_quality"] == want[pdq]["pdq_quality"]
            if fmt in ("hma", "csv", "jsonl"):  # context travels too
                for k in CONTEXT:
                    assert row[k] == want[pdq][k], (pdq, k)
        assert dst.integrity_check() == []


def test_low_quality_hashes_are_left_out_of_hash_list_exports() -> None:
    rows = [{"pdq": "ab" * 32, "pdq_quality": 49}, {"pdq": "cd" * 32, "pdq_quality": 50},
            {"pdq": "ef" * 32, "pdq_quality": None}]
    out = io.StringIO()
    assert write_hash_list(rows, "pdq-lines", out) == (2, 1)
    assert out.getvalue() == f"{'cd' * 32},50\n{'ef' * 32}\n"


# -- idempotence --------------------------------------------------------------------------------
def test_reimport_is_idempotent_and_a_changed_context_updates(tmp_path: Path) -> None:
    path = require(HAYSTACK)
    with imgverify.Archive.open(tmp_path / "a.sqlite") as arch:
        first = import_file(arch, path, "pdq-lines", date="2020-01-01", event="E")
        n = first.added
        assert n == len({x.strip() for x in path.read_text().splitlines() if x.strip()})
        generation = arch.generation()
        again = import_file(arch, path, "pdq-lines", date="2020-01-01", event="E")
        assert (again.added, again.updated, again.unchanged) == (0, 0, n)
        assert arch.generation() == generation  # nothing written, the index stays valid
        assert len(arch) == n
        changed = import_file(arch, path, "pdq-lines", date="2020-01-01", event="E2")
        assert (changed.added, changed.updated, changed.unchanged) == (0, n, 0)
        assert len(arch) == n
        assert {r.event for r in arch.iter_references()} == {"E2"}
        assert len(arch.index()) == n  # one hash row each, no leftovers


# -- matching -----------------------------------------------------------------------------------
def _archive_with_hash_of(photo: Path, tmp_path: Path, location: str | None = None) -> Any:
    pdq, quality = pdq_of(photo)
    path = jsonl(tmp_path / "list.jsonl", [{"pdq": pdq, "pdq_quality": quality, **CONTEXT}])
    arch = imgverify.Archive.open(location or str(tmp_path / "desk.sqlite"))
    report = import_file(arch, path, "jsonl")
    assert (report.added, report.errors) == (1, [])
    return arch


def _assert_hash_only_match(result: Any) -> None:
    assert result.verdict in ("likely_recycled", "possibly_recycled"), result.to_dict()
    top = result.matches[0]
    assert top.hash_only is True and top.sha256 is None
    assert set(top.distances) == {"pdq"}
    assert top.distances["pdq"] <= DEFAULT_THRESHOLDS.pdq_only_possible
    for k, v in CONTEXT.items():
        assert getattr(top, k) == v
    assert any(HASH_ONLY_NOTE in n for n in result.notes)
    assert "no image was available for local verification" in " ".join(result.notes)
    d = result.to_dict()
    assert d["matches"][0]["hash_only"] is True and d["matches"][0]["sha256"] is None


def test_reencoded_and_resized_copies_match_a_hash_only_reference(tmp_path: Path) -> None:
    photo = coco(1, start=5)[0]
    with _archive_with_hash_of(photo, tmp_path) as arch:
        for data in (jpeg(photo, 50), jpeg(photo, 50, scale=0.5)):
            result = imgverify.check(data, arch, claimed_date="2024-05-01")
            _assert_hash_only_match(result)
            assert result.matches[0].days_before_claim == (
                __import__("datetime").date(2024, 5, 1)
                - __import__("datetime").date(2019, 3, 1)).days
        assert arch.integrity_check() == []


@pytest.mark.parametrize("group", ["webcam_chamonix", "landmark_sacre_coeur"])
def test_unrelated_photos_do_not_match_a_hash_only_reference(group: str, tmp_path: Path
                                                             ) -> None:
    """A false 'recycled' is worse than a miss: other photos, including other frames of the
    same fixed webcam (one pair there is 44 bits apart: a match under the combined-distance
    thresholds, which would allow 44 for PDQ alone) or of the same landmark, are no match."""
    folder = require(PHOTOS / "same_place" / group)
    shots = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for i, ref in enumerate(shots):
        with _archive_with_hash_of(ref, tmp_path, str(tmp_path / f"{i}.sqlite")) as arch:
            for other in [s for s in shots if s != ref] + coco(2, start=20 + i):
                result = imgverify.check(jpeg(other, 90), arch)
                assert result.verdict == "no_match", (ref, other, result.to_dict()["matches"])


def test_flat_query_is_not_matched_on_pdq_alone(tmp_path: Path) -> None:
    """Below PDQ quality 50 the hash says little; with no image to confirm, no match."""
    rng = np.random.default_rng(3)
    base = np.tile(np.linspace(120, 124, 256), (256, 1))[..., None].repeat(3, axis=2)
    flat = Image.fromarray((base + rng.normal(0, 0.3, base.shape)).clip(0, 255)
                           .astype(np.uint8))
    buf = io.BytesIO()
    flat.save(buf, "PNG")
    pdq, quality = pdq_of(buf.getvalue())
    assert quality < 50, quality
    with imgverify.Archive.open(tmp_path / "a.sqlite") as arch:
        arch.write_hashes([HashOnlyReference(int(pdq, 16), UNKNOWN_QUALITY,
                                             {"date": "2010-10-10"})])
        result = imgverify.check(buf.getvalue(), arch)
        assert result.verdict == "no_match", result.to_dict()["matches"]


def test_hash_only_row_is_compared_by_pdq_only() -> None:
    """Its stored pHash/dHash/wHash are zeros standing for 'unknown': never part of the
    distances, and a far PDQ is no candidate."""
    far = int("f0" * 32, 16)
    index = HashIndex.from_rows([(1, PDQ_ONLY_PART, HashSet(far, 100, 0, 0, 0))])
    assert index.search([int("0f" * 32, 16)] * 8, 31) == []
    query = HashSet(far ^ 0b111, 100, 0, 0, 0)
    assert index.distances(0, query) == {"pdq": 3}


def test_hash_only_row_keeps_its_place_among_many_candidates() -> None:
    """When more candidates than `limit` are near, a hash-only row is ranked by its PDQ
    distance like any other row, not pushed out by the pHash it does not have."""
    rng = np.random.default_rng(5)
    query_pdq = int.from_bytes(rng.bytes(32), "big")
    query_phash = 0x0123456789ABCDEF
    rows: list[tuple[int, str, HashSet]] = [
        (k, "full", HashSet(query_pdq ^ ((1 << 20) - 1) << k, 100, query_phash, 0, 0))
        for k in range(1, 61)]  # 20 bits away by PDQ, equal by pHash: 60 candidates
    rows.append((99, PDQ_ONLY_PART, HashSet(query_pdq ^ 0x3FF, 100, 0, 0, 0)))  # PDQ 10 away
    index = HashIndex.from_rows(rows)
    for path in ("linear", "mih"):
        found = index.search([query_pdq] * 8, 31, limit=50, path=path)
        assert len(found) == 50
        assert found[0].ref_key == 99


def test_integrity_check_wants_the_right_hash_row(tmp_path: Path) -> None:
    """A hash-only reference is healthy without a thumbnail, but not without its PDQ row."""
    import sqlite3

    path = tmp_path / "a.sqlite"
    with imgverify.Archive.open(path) as arch:
        arch.write_hashes([HashOnlyReference(int("ab" * 32, 16), 80, {"date": "2010-10-10"})])
        assert arch.integrity_check() == []
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE hashes SET variant='full'")
    conn.close()
    with imgverify.Archive.open(path) as arch:
        assert [p.endswith("has no hashes") for p in arch.integrity_check()] == [True]


def test_hash_only_references_are_left_alone_by_rehash(tmp_path: Path) -> None:
    with imgverify.Archive.open(tmp_path / "a.sqlite") as arch:
        arch.write_hashes([HashOnlyReference(int("ab" * 32, 16), 80, {"date": "2010-10-10"})])
        report = arch.rehash()
        assert report.failed == [] and (report.from_source, report.from_thumbnail) == (0, 0)
        assert arch.hashes_of(next(arch.iter_references()).key)[0][1].pdq == int("ab" * 32, 16)


# -- command line -------------------------------------------------------------------------------
def test_cli_import_hashes(tmp_path: Path) -> None:
    photo = coco(1, start=5)[0]
    pdq, quality = pdq_of(photo)
    path = tmp_path / "list.txt"
    path.write_text(f"{pdq},{quality},shared.jpg\nnot-a-hash\nvideo_md5 abc\n")
    archive = tmp_path / "desk.sqlite"
    res = runner.invoke(app, ["archive", "import-hashes", str(path), "--archive", str(archive),
                              "--date", "2019-03-01", "--event", "Flood", "--source",
                              "Programme X"])
    assert res.exit_code == 3, res.output  # bad rows: reported, the rest imported
    summary = json.loads(res.stdout)
    assert summary["added"] == 1 and [e["line"] for e in summary["errors"]] == [2, 3]
    assert f"{path}:2:" in res.stderr
    query = tmp_path / "q.jpg"
    query.write_bytes(jpeg(photo, 50))
    res = runner.invoke(app, ["check", str(query), "--archive", str(archive), "--format",
                              "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] in ("likely_recycled", "possibly_recycled")
    assert out["matches"][0]["event"] == "Flood" and out["matches"][0]["hash_only"] is True
    res = runner.invoke(app, ["archive", "import-hashes", str(path), "--archive", str(archive),
                              "--format", "nope", "--date", "2019-03-01"])
    assert res.exit_code == 2
    te = tmp_path / "te.txt"
    te.write_text(f"pdq {pdq}\nvideo_md5 d41d8cd98f00b204e9800998ecf8427e\n")
    res = runner.invoke(app, ["archive", "import-hashes", str(te), "--format", "te",
                              "--archive", str(archive), "--date", "2019-03-01"])
    assert res.exit_code == 0, res.output  # a skipped signal type is not an error
    summary = json.loads(res.stdout)
    assert summary["updated"] == 1 and [s["line"] for s in summary["skipped"]] == [2]
    res = runner.invoke(app, ["archive", "export", "--archive", str(archive), "--format", "te"])
    assert res.exit_code == 0 and res.stdout == f"pdq {pdq}\n"
    res = runner.invoke(app, ["archive", "import-hashes", "-", "--format", "te", "--archive",
                              str(tmp_path / "piped.sqlite"), "--date", "2019-03-01"],
                        input=res.stdout)  # threatexchange ... | imgverify ... -
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == 1, res.output
    res = runner.invoke(app, ["archive", "import-hashes", str(tmp_path / "absent.txt"),
                              "--archive", str(archive), "--date", "2019-03-01"])
    assert res.exit_code == 3 and "cannot open" in res.stderr


def test_parse_pdq_is_strict() -> None:
    assert parse_pdq("AB" * 32) == int("ab" * 32, 16)
    for bad in ("ab" * 31, "ab" * 33, "g" * 64, "0x" + "ab" * 31, "f" * 64):
        with pytest.raises(ValueError):
            parse_pdq(bad)


def test_skipped_rows_are_row_errors_of_their_own_kind() -> None:
    assert issubclass(SkippedRow, RowError)


# -- PostgreSQL ---------------------------------------------------------------------------------
def test_postgres_hash_only_references(pg_location: str, tmp_path: Path) -> None:
    photo = coco(1, start=5)[0]
    with _archive_with_hash_of(photo, tmp_path, location=pg_location) as arch:
        assert arch.backend == "postgresql"
        _assert_hash_only_match(imgverify.check(jpeg(photo, 50), arch))
        assert imgverify.check(jpeg(coco(1, start=30)[0], 75), arch).verdict == "no_match"
        assert arch.integrity_check() == []
        pdq = pdq_of(photo)[0]
        assert arch.find_sha256(hash_key(int(pdq, 16))) is not None
        # an update is seen by the running matcher; a re-import changes nothing
        path = jsonl(tmp_path / "again.jsonl", [{"pdq": pdq, **CONTEXT, "event": "Renamed"}])
        again = import_file(arch, path, "jsonl")
        assert (again.added, again.updated, again.unchanged) == (0, 1, 0)
        result = imgverify.check(jpeg(photo, 50), arch)
        assert [m.event for m in result.matches] == ["Renamed"] and result.matches[0].hash_only
        generation = arch.generation()
        again = import_file(arch, path, "jsonl")
        assert (again.added, again.updated, again.unchanged) == (0, 0, 1)
        assert len(arch) == 1 and arch.generation() == generation
        exported = list(arch.export())
        assert exported[0]["pdq"] == pdq and exported[0]["hash_only"] is True
        out = io.StringIO()
        write_hash_list(exported, "hma", out)
        (tmp_path / "bank.jsonl").write_text(out.getvalue())
        with imgverify.Archive.open(tmp_path / "copy.sqlite") as dst:
            report = import_file(dst, tmp_path / "bank.jsonl", "hma")
            assert report.added == 1
            assert next(dst.iter_references()).event == "Renamed"
