"""Issue 2 end to end on real images: PDQ conformance, loading, archive, CLI, library."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageOps
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.ingest import ingest_manifest
from imgverify.media.load import load
from imgverify.signals.hashing import DIHEDRAL_NAMES, PictureHasher, hamming

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PDQ_REF = SHARED / "pdq-reference"
PHOTOS = SHARED / "photos"
needs_shared = pytest.mark.skipif(not SHARED.exists(),
                                  reason="../shared/data is absent: shared-data tests skipped")
runner = CliRunner()


def _rows(reference: str) -> list[dict[str, str]]:
    with (PDQ_REF / "expected.csv").open() as fh:
        return [r for r in csv.DictReader(fh) if r["reference"] == reference]


def _cli_hash(path: Path) -> dict[str, object]:
    res = runner.invoke(app, ["hash", "--algorithm", "pdq", "--format", "jsonl", str(path)])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip())


# -- PDQ conformance ------------------------------------------------------------------------
@needs_shared
def test_pdq_bit_exact_with_pdqhash_pillow_rows() -> None:
    rows = _rows("pdqhash-pillow")
    assert len(rows) >= 15
    for row in rows:
        got = _cli_hash(PDQ_REF / row["file"])
        assert got["pdq"] == row["pdq_hex"], row["file"]
        if row["quality"]:
            assert got["pdq_quality"] == int(row["quality"]), row["file"]


@needs_shared
def test_pdq_within_10_bits_of_cpp_reference_at_quality_80() -> None:
    rows = _rows("cpp-cli")
    checked = 0
    for row in rows:
        got = _cli_hash(PDQ_REF / row["file"])
        dist = hamming(int(str(got["pdq"]), 16), int(row["pdq_hex"], 16))
        if int(str(got["pdq_quality"])) >= 80:
            assert dist <= 10, (row["file"], dist)
            checked += 1
        else:  # only the deliberately low-quality LabelMe images fall here
            assert "q000" in row["file"], row["file"]
    assert checked >= 14


@needs_shared
def test_hash_cli_as_a_subprocess() -> None:
    f = PDQ_REF / "pdq/data/reg-test-input/dih/bridge-1-original.jpg"
    out = subprocess.run([sys.executable, "-m", "imgverify", "hash", "--algorithm",
                          "pdq,phash", "--format", "jsonl", str(f)],
                         capture_output=True, text=True, check=True)
    rec = json.loads(out.stdout)
    assert set(rec) == {"input", "pdq", "pdq_quality", "phash"}
    assert len(str(rec["pdq"])) == 64 and len(str(rec["phash"])) == 16


@needs_shared
def test_dihedral_variants_match_transformed_files() -> None:
    dih = PDQ_REF / "pdq/data/reg-test-input/dih"
    files = sorted(dih.glob("bridge-*.jpg"))
    variants = PictureHasher(load(dih / "bridge-1-original.jpg").image).pdq_variants
    names = ["original", "rotate90", "rotate180", "rotate270", "flipx", "flipy", "flipplus1",
             "flipminus1"]
    assert list(DIHEDRAL_NAMES) == names
    for k, f in enumerate(files):
        h = PictureHasher(load(f).image).pdq_variants[0]
        assert hamming(h, variants[k]) <= 12, f.name


# -- a small archive of real photos -------------------------------------------------------
@pytest.fixture(scope="module")
def photo_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    if not PHOTOS.exists():
        pytest.skip("../shared/data/photos is absent")
    folder = tmp_path_factory.mktemp("archive")
    photos = sorted((PHOTOS / "coco128" / "train2017").glob("*.jpg"))[:12]
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "date", "event", "place", "source_url"])
        for i, p in enumerate(photos):
            w.writerow([str(p), f"2023-10-{i + 1:02d}", f"event {i}", f"place {i}",
                        f"https://example.org/{i}"])
    archive = folder / "desk.sqlite"
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", str(archive),
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    return archive, photos


def _variants(src: Path, out: Path) -> dict[str, Path]:
    im = Image.open(src).convert("RGB")
    made = {
        "q30": (im, {"quality": 30}),
        "half": (im.resize((im.width // 2, im.height // 2)), {}),
        "gray": (im.convert("L"), {}),
        "mirror": (ImageOps.mirror(im), {}),
    }
    paths = {}
    for name, (pic, kw) in made.items():
        p = out / f"{src.stem}-{name}.jpg"
        pic.save(p, "JPEG", **kw)
        paths[name] = p
    return paths


@needs_shared
def test_scan_end_to_end(photo_archive: tuple[Path, list[Path]], tmp_path: Path) -> None:
    archive, photos = photo_archive
    scan_dir = tmp_path / "downloads"
    (scan_dir / "nested").mkdir(parents=True)
    expected: dict[str, str] = {}
    for i, p in enumerate(photos[:5]):
        for _name, q in _variants(p, scan_dir / "nested").items():
            expected[str(q)] = f"event {i}"
    negatives = sorted((PHOTOS / "bsds500" / "test").glob("*.jpg"))[:8]
    for n in negatives:
        (scan_dir / n.name).write_bytes(n.read_bytes())
    (scan_dir / "empty.jpg").write_bytes(b"")
    (scan_dir / "truncated.jpg").write_bytes(photos[0].read_bytes()[:3000])
    out = tmp_path / "results.jsonl"
    res = runner.invoke(app, ["scan", str(scan_dir), "--archive", str(archive), "--format",
                              "jsonl", "--out", str(out), "--workers", "1", "--no-progress"])
    assert res.exit_code == 3  # completed, some inputs could not be checked
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(expected) + len(negatives) + 2
    by_input = {r["input"]: r for r in lines}
    for path, event in expected.items():
        r = by_input[path]
        assert r["verdict"] == "likely_recycled", (path, r["matches"][:1])
        assert r["matches"][0]["event"] == event
        assert r["matches"][0]["date"].startswith("2023-10-")
    for n in negatives:
        assert by_input[str(scan_dir / n.name)]["verdict"] == "no_match"
    assert by_input[str(scan_dir / "empty.jpg")]["error"]["kind"] == "empty_input"
    assert by_input[str(scan_dir / "truncated.jpg")]["error"]["kind"] == "truncated_image"
    # resume: drop the last two lines and a half line; only those inputs are re-checked
    kept = out.read_text().splitlines()[:-2]
    out.write_text("\n".join(kept) + "\n" + '{"input": "half-writ')
    res = runner.invoke(app, ["scan", str(scan_dir), "--archive", str(archive), "--format",
                              "jsonl", "--out", str(out), "--resume", "--workers", "1",
                              "--no-progress"])
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(again) == len(lines)
    assert {r["input"] for r in again} == set(by_input)


@needs_shared
def test_scan_without_local_features_finds_whole_copies_and_says_what_it_skipped(
        photo_archive: tuple[Path, list[Path]], tmp_path: Path) -> None:
    archive, photos = photo_archive
    scan_dir = tmp_path / "downloads"
    scan_dir.mkdir()
    whole, crops = [], []
    for p in photos[:3]:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        q = scan_dir / f"{p.stem}-q40.jpg"
        ImageOps.mirror(im).save(q, "JPEG", quality=40)
        whole.append(str(q))
        c = scan_dir / f"{p.stem}-crop.jpg"  # the middle 55 %: beyond the global hashes
        im.crop((int(w * 0.1), int(h * 0.2), int(w * 0.75), int(h * 0.95))).save(c, "JPEG")
        crops.append(str(c))
    negative = sorted((PHOTOS / "bsds500" / "test").glob("*.jpg"))[0]
    (scan_dir / negative.name).write_bytes(negative.read_bytes())
    runs = {}
    for flag in ("--local", "--no-local"):
        out = tmp_path / f"results{flag}.jsonl"
        res = runner.invoke(app, ["scan", str(scan_dir), "--archive", str(archive), "--out",
                                  str(out), "--workers", "1", "--no-progress", flag])
        assert res.exit_code == 0, res.output
        assert ("were not searched" in res.stderr) == (flag == "--no-local"), res.stderr
        runs[flag] = {r["input"]: r for r in map(json.loads, out.read_text().splitlines())}
    full, fast = runs["--local"], runs["--no-local"]
    for path in whole:
        assert full[path]["verdict"] == fast[path]["verdict"] == "likely_recycled", path
        assert fast[path]["matches"][0]["reference_id"] == full[path]["matches"][0][
            "reference_id"]
        assert fast[path]["searched"] == {"global_hashes": "searched", "local_features": "off"}
        assert full[path]["searched"]["local_features"] == "not_needed"
    for path in crops:
        assert full[path]["verdict"] != "no_match", path  # found by the local stage only
        assert full[path]["searched"]["local_features"] == "searched"
        assert fast[path]["verdict"] == "no_match", path
        assert any("were not searched" in n and "--no-local" in n for n in fast[path]["notes"])
    neg = str(scan_dir / negative.name)
    assert full[neg]["verdict"] == fast[neg]["verdict"] == "no_match"
    assert not any("--no-local" in n for n in full[neg]["notes"])
    # in CSV each row says it, and the HTML summary says how many were searched that way
    for flag in ("--local", "--no-local"):
        out, page = tmp_path / f"results{flag}.csv", tmp_path / f"summary{flag}.html"
        res = runner.invoke(app, ["scan", str(scan_dir), "--archive", str(archive), "--out",
                                  str(out), "--format", "csv", "--report", str(page),
                                  "--workers", "1", "--no-progress", flag])
        assert res.exit_code == 0, res.output
        rows = {r["input"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
        html_text = page.read_text(encoding="utf-8")
        if flag == "--no-local":
            assert {r["local_features"] for r in rows.values()} == {"off"}
            assert "<p id='local-off'><b>7 of these were searched for whole-picture " \
                "matches only</b>" in html_text
        else:
            assert {rows[p]["local_features"] for p in whole} == {"not_needed"}
            assert {rows[p]["local_features"] for p in crops + [neg]} == {"searched"}
            assert "local-off" not in html_text
    # the desk's command takes the same switch
    res = runner.invoke(app, ["check", crops[0], "--archive", str(archive), "-f", "json",
                              "--no-local"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["searched"]["local_features"] == "off"


@needs_shared
@pytest.mark.parametrize("where", ["above", "below"])
def test_a_meme_is_found_by_its_whole_picture_hashes(photo_archive: tuple[Path, list[Path]],
                                                     tmp_path: Path, where: str) -> None:
    """The photo under a caption bar is hashed as a part of its own, so a meme is found
    without local features (--no-local) and the result names the edit."""
    archive, photos = photo_archive
    photo = Image.open(photos[1]).convert("RGB")
    bar = photo.height // 5
    meme = Image.new("RGB", (photo.width, photo.height + bar), (255, 255, 255))
    meme.paste(photo, (0, bar if where == "above" else 0))
    y = (0 if where == "above" else photo.height) + bar // 4
    ImageDraw.Draw(meme).text((photo.width // 20, y), "THEY DON'T WANT YOU TO SEE THIS",
                              fill=(0, 0, 0), font_size=bar // 2)
    path = tmp_path / "meme.jpg"
    meme.save(path, "JPEG", quality=85)
    res = runner.invoke(app, ["check", str(path), "--archive", str(archive), "-f", "json",
                              "--no-local"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] == "likely_recycled", out["notes"]
    top = out["matches"][0]
    assert top["method"] == "global_hashes" and "caption bar" in (top["transform"] or "")
    original = runner.invoke(app, ["check", str(photos[1]), "--archive", str(archive), "-f",
                                   "json"])
    assert top["reference_id"] == json.loads(original.stdout)["matches"][0]["reference_id"]


@needs_shared
def test_scan_csv_and_two_workers_agree(photo_archive: tuple[Path, list[Path]],
                                        tmp_path: Path) -> None:
    archive, photos = photo_archive
    d = tmp_path / "in"
    d.mkdir()
    for p in photos[:3]:
        _variants(p, d)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    for out, workers in ((one, "1"), (two, "2")):
        res = runner.invoke(app, ["scan", str(d), "--archive", str(archive), "--format", "csv",
                                  "--out", str(out), "--workers", workers, "--no-progress"])
        assert res.exit_code == 0, res.output
    r1 = list(csv.DictReader(one.open()))
    r2 = list(csv.DictReader(two.open()))
    assert len(r1) == 12
    assert [(r["input"], r["verdict"], r["reference_id"]) for r in r1] == \
        [(r["input"], r["verdict"], r["reference_id"]) for r in r2]


@needs_shared
def test_ingest_is_idempotent_and_reports_bad_rows(tmp_path: Path) -> None:
    photos = sorted((PHOTOS / "coco128" / "val2017").glob("*.jpg"))[:4]
    manifest = tmp_path / "m.jsonl"
    lines = [json.dumps({"image": str(p), "date": f"2020-01-0{i + 1}", "event": f"e{i}"})
             for i, p in enumerate(photos)]
    lines.insert(1, json.dumps({"image": "missing.jpg", "date": "2020-01-01"}))
    lines.insert(3, "{not json")
    lines.append(json.dumps({"image": str(photos[0]), "date": "yesterday"}))
    lines.append(json.dumps({"image": str(photos[1])}))
    manifest.write_text("\n".join(lines) + "\n")
    archive = tmp_path / "a.sqlite"
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", str(archive),
                              "--workers", "1"])
    assert res.exit_code == 3
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["added"] == 4
    assert sorted(e["line"] for e in report["errors"]) == [2, 4, 7, 8]
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", str(archive)])
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (report["added"], report["updated"]) == (0, 4)
    stats = json.loads(runner.invoke(app, ["archive", "stats", "--archive",
                                           str(archive)]).stdout)
    assert stats["references"] == 4
    listed = runner.invoke(app, ["archive", "list", "--archive", str(archive)]).stdout
    refs = [json.loads(x) for x in listed.splitlines()]
    assert [r["event"] for r in refs] == ["e0", "e1", "e2", "e3"]
    exported = runner.invoke(app, ["archive", "export", "--archive", str(archive)]).stdout
    assert all(len(json.loads(x)["pdq"]) == 64 for x in exported.splitlines())
    res = runner.invoke(app, ["archive", "remove", refs[0]["reference_id"], "--archive",
                              str(archive)])
    assert res.exit_code == 0
    result = imgverify.check(photos[0], imgverify.Archive.open(archive))
    assert result.verdict == "no_match"
    check = runner.invoke(app, ["archive", "check", "--archive", str(archive)])
    assert check.exit_code == 0 and json.loads(check.stdout)["healthy"]


# -- bad input ------------------------------------------------------------------------------
def _kind(source: object, archive: imgverify.Archive) -> str | None:
    result = imgverify.check(source, archive)  # type: ignore[arg-type]
    return result.error["kind"] if result.error else result.verdict


@needs_shared
def test_bad_inputs_give_typed_errors(tmp_path: Path) -> None:
    archive = imgverify.Archive.default()
    jpeg = (PHOTOS / "coco128" / "train2017").glob("*.jpg").__next__().read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, this is not an image\n")
    (tmp_path / "page.jpg").write_text("<!doctype html><html><body>hi</body></html>")
    bomb = Image.new("1", (20000, 20000))
    bomb.save(tmp_path / "bomb.png")
    assert _kind(tmp_path / "trunc.jpg", archive) == "truncated_image"
    assert _kind(tmp_path / "zero.jpg", archive) == "empty_input"
    assert _kind(tmp_path / "text.jpg", archive) == "not_an_image"
    assert _kind(tmp_path / "page.jpg", archive) == "not_an_image"
    small = imgverify.Limits(max_pixels=100_000_000)
    res = imgverify.check(tmp_path / "bomb.png", archive, limits=small)
    assert res.error is not None and res.error["kind"] == "image_too_large"
    corrupt = PHOTOS / "imagededup_ukbench" / "mixed_images" / "ukbench09268_corrupt.jpg"
    assert _kind(corrupt, archive) in ("corrupt_image", "truncated_image", "not_an_image")
    assert _kind(tmp_path / "absent.jpg", archive) == "not_found"


@needs_shared
def test_odd_but_valid_images(tmp_path: Path) -> None:
    archive = imgverify.Archive.default()
    cmyk = PDQ_REF / "pdq/data/misc-images/modes/CMYK.jpg"
    orig = PDQ_REF / "pdq/data/reg-test-input/dih/bridge-1-original.jpg"
    assert hamming(imgverify.compute_hashes(load(cmyk).image).pdq,
                   imgverify.compute_hashes(load(orig).image).pdq) <= 16
    rot = load(PDQ_REF / "pdq/data/reg-test-input/exif-rotn/exif-rotn-6.jpg")
    assert rot.original_size[0] < rot.original_size[1]  # EXIF orientation 6 applied
    assert rot.image.width < rot.image.height
    # GIF: the first frame is what gets checked
    a = Image.open(PHOTOS / "pkg_samples" / "skimage_astronaut.png").convert("RGB")
    b = Image.open(PHOTOS / "pkg_samples" / "skimage_coffee.png").convert("RGB").resize(a.size)
    a.save(tmp_path / "anim.gif", save_all=True, append_images=[b], duration=100)
    first = Image.open(tmp_path / "anim.gif").convert("RGB")
    assert hamming(imgverify.compute_hashes(load(tmp_path / "anim.gif").image).phash,
                   imgverify.compute_hashes(first).phash) <= 4
    rgba = a.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "alpha.png")
    assert imgverify.check(tmp_path / "alpha.png", archive).verdict == "no_match"


# -- the shipped examples and the library ---------------------------------------------------
def test_default_archive_examples() -> None:
    archive = imgverify.Archive.default()
    for name in ("viral_rocket_repost", "viral_portrait_repost", "viral_space_repost"):
        r = imgverify.check(ROOT / "fixtures" / "examples" / f"{name}.jpg", archive,
                            claimed_date="2025-06-01")
        assert r.verdict == "likely_recycled", name
        top = r.matches[0]
        assert top.days_before_claim is not None and top.days_before_claim > 3000
        assert top.event and top.credit and top.license
    rocket = imgverify.check(ROOT / "fixtures/examples/viral_rocket_repost.jpg", archive)
    assert "mirrored" in (rocket.matches[0].transform or "")
    for name in ("chelsea", "coffee"):
        r = imgverify.check(ROOT / "fixtures" / "not_archived" / f"{name}.jpg", archive)
        assert r.verdict == "no_match"
        assert any("not in this archive" in n for n in r.notes)


def test_check_json_contract_and_exit_codes(tmp_path: Path) -> None:
    src = ROOT / "fixtures/examples/viral_space_repost.jpg"
    res = runner.invoke(app, ["check", str(src), "--format", "json", "--claimed-date",
                              "2024-01-01"])
    assert res.exit_code == 0
    d = json.loads(res.stdout)
    for key in ("input", "sha256", "verdict", "error", "matches", "exif", "notes"):
        assert key in d
    m = d["matches"][0]
    for key in ("reference_id", "score", "event", "date", "place", "caption", "source",
                "source_url", "credit", "distances", "transform", "days_before_claim"):
        assert key in m
    assert m["days_before_claim"] == (__import__("datetime").date(2024, 1, 1)
                                      - __import__("datetime").date(2012, 9, 25)).days
    assert set(d["exif"]) >= {"datetime_original", "camera", "software", "gps"}
    # the "not in this archive" caveat belongs to no-match results only (issue 13, item 4)
    assert not any("not in this archive" in n for n in d["notes"])
    assert "compare the two images by eye" in d["notes"][-1]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert runner.invoke(app, ["check", str(bad)]).exit_code == 3
    assert runner.invoke(app, ["check", str(src), "--claimed-date", "June"]).exit_code == 2
    assert runner.invoke(app, ["check", str(src), "--archive",
                               str(tmp_path / "none.sqlite")]).exit_code == 4
    html = tmp_path / "r.html"
    assert runner.invoke(app, ["check", str(src), "--format", "html", "--out",
                               str(html)]).exit_code == 0
    text = html.read_text()
    assert "Hubble eXtreme Deep Field" in text and "data:image/jpeg;base64," in text
    stdin = runner.invoke(app, ["check", "-", "--format", "json"], input=src.read_bytes())
    assert json.loads(stdin.stdout)["verdict"] == "likely_recycled"


def test_library_sources_threads_and_silence(capsys: pytest.CaptureFixture[str]) -> None:
    archive = imgverify.Archive.default()
    src = ROOT / "fixtures/examples/viral_portrait_repost.jpg"
    by_path = imgverify.check(src, archive)
    by_bytes = imgverify.check(src.read_bytes(), archive)
    by_pil = imgverify.check(Image.open(src), archive)
    assert by_path.verdict == by_bytes.verdict == by_pil.verdict == "likely_recycled"
    assert by_path.matches[0].reference_id == by_pil.matches[0].reference_id
    assert isinstance(by_path, imgverify.CheckResult)
    assert by_path.to_dict()["sha256"] == by_bytes.to_dict()["sha256"]
    inputs = sorted((ROOT / "fixtures").glob("*/*.jpg"))
    expected = [imgverify.check(p, archive).to_dict()["matches"] for p in inputs]
    results: dict[int, list[object]] = {}

    def work(t: int) -> None:
        results[t] = [imgverify.check(p, archive).to_dict()["matches"] for p in inputs] * 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in range(8):
        assert [[m["reference_id"] for m in ms] for ms in results[t]] == \
            [[m["reference_id"] for m in ms] for ms in expected]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@needs_shared
def test_exif_evidence_and_earliest_first(tmp_path: Path) -> None:
    cam = next(p for p in sorted((PHOTOS / "camera_exif").rglob("*.jpg"))
               if "gps" in str(p))
    result = imgverify.check(cam, imgverify.Archive.default(), claimed_date="2030-01-01")
    exif = result.exif
    assert exif["datetime_original"] and exif["camera"] and exif["gps"]
    assert any("EXIF says the photo was taken" in n for n in result.notes)
    # the same photo archived twice: the earlier publication is the likely original
    src = sorted((PHOTOS / "coco128" / "val2017").glob("*.jpg"))[5]
    im = Image.open(src).convert("RGB")
    late, early = tmp_path / "late.jpg", tmp_path / "early.jpg"
    im.save(late, quality=70)
    im.save(early, quality=95)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,date,event\n{late},2022-05-01,republished\n"
                        f"{early},2019-03-02,first published\n")
    archive = imgverify.Archive.open(tmp_path / "a.sqlite")
    assert ingest_manifest(archive, manifest).added == 2
    buf = io.BytesIO()
    im.resize((im.width // 2, im.height // 2)).save(buf, "JPEG", quality=60)
    r = imgverify.check(buf.getvalue(), archive, claimed_date="2024-01-01")
    assert [m.event for m in r.matches] == ["first published", "republished"]
    assert [m.role for m in r.matches] == ["likely_original", "later_publication"]
