"""Archive durability: SIGKILL during `archive add` loses nothing committed, leaves no
half-record, and a re-run completes the ingest idempotently."""

from __future__ import annotations

import csv
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from privileges import (
    assert_really_read_only,
    make_read_only,
    make_writable,
    run_without_override,
)

from imgverify.ingest import ingest_manifest

N_REFS = 2500


def _make_images(folder: Path, n: int) -> Path:
    """n distinct small JPEGs (smooth random fields, so each hashes differently)."""
    rng = np.random.default_rng(7)
    folder.mkdir()
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "date", "event"])
        for i in range(n):
            small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            im = Image.fromarray(small).resize((96, 72), Image.Resampling.BICUBIC)
            name = f"img{i:05d}.jpg"
            im.save(folder / name, quality=85)
            w.writerow([name, f"20{10 + i % 15:02d}-0{1 + i % 9}-1{i % 9}", f"event {i}"])
    return manifest


def _add(manifest: Path, archive: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "imgverify", "archive", "add", str(manifest), "--archive",
         str(archive), "--workers", "1", "--batch-size", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _committed(archive: Path) -> int:
    conn = sqlite3.connect(archive)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0])
    finally:
        conn.close()


def _committed_or_zero(archive: Path) -> int:
    """References committed so far; 0 while the archive is still being created."""
    try:
        conn = sqlite3.connect(f"file:{archive}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _archive_check(archive: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "imgverify", "archive", "check", "--archive",
                          str(archive)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def test_sigkill_during_ingest_loses_nothing_committed(tmp_path: Path) -> None:
    manifest = _make_images(tmp_path / "imgs", N_REFS)
    archive = tmp_path / "desk.sqlite"
    rnd = random.Random(11)
    previous = 0
    kills = 0
    for _ in range(4):
        proc = _add(manifest, archive)
        # kill only once this run has committed something (however slow the machine), at a
        # random moment after that: mid-batch as often as between batches
        deadline = time.monotonic() + 300
        while (_committed_or_zero(archive) <= previous and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        time.sleep(rnd.uniform(0.0, 0.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        report = _archive_check(archive)
        assert report["healthy"], report["problems"]
        count = _committed(archive)
        # nothing committed before is ever lost, and each run commits whole batches
        assert count >= previous
        previous = count
    assert kills >= 2, "ingest finished before it could be killed twice; raise N_REFS"
    assert 0 < previous < N_REFS
    # every committed reference is complete: hashes, features row optional, thumbnail present
    conn = sqlite3.connect(archive)
    incomplete = conn.execute(
        "SELECT COUNT(*) FROM refs r WHERE thumbnail IS NULL OR NOT EXISTS "
        "(SELECT 1 FROM hashes h WHERE h.ref_id = r.id AND h.variant = 'full')").fetchone()[0]
    conn.close()
    assert incomplete == 0
    # re-running completes the ingest idempotently: every row exactly once
    proc = _add(manifest, archive)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["added"] == N_REFS - previous
    assert summary["updated"] == previous
    assert _committed(archive) == N_REFS
    assert _archive_check(archive)["healthy"]


def _generation(archive: Path) -> int:
    conn = sqlite3.connect(f"file:{archive}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
    finally:
        conn.close()


def _check_json(query: Path, archive: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "imgverify", "check", str(query),
                          "--archive", str(archive), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_readers_work_while_a_writer_ingests(tmp_path: Path) -> None:
    """Checks run, and see committed data, while a writer is in the middle of an ingest.

    The writer is frozen (SIGSTOP) once it has committed a batch, so the checks provably run
    while it is alive and, most likely, inside its next open transaction; it is then let go
    and the checks repeat while it runs on."""
    manifest = _make_images(tmp_path / "imgs", 600)
    archive = tmp_path / "desk.sqlite"
    first = _add(manifest, archive)
    first.communicate(timeout=300)
    start_generation = _generation(archive)
    query = tmp_path / "imgs" / "img00003.jpg"
    writer = _add(manifest, archive)  # re-ingest: updates every row, batch by batch
    try:
        deadline = time.monotonic() + 120
        while _generation(archive) == start_generation and writer.poll() is None:
            assert time.monotonic() < deadline, "the writer committed nothing in 120 s"
            time.sleep(0.02)
        writer.send_signal(signal.SIGSTOP)
        assert writer.poll() is None, "the writer finished before a check could overlap it"
        frozen_at = _generation(archive)
        assert frozen_at > start_generation
        for _ in range(2):  # the writer is alive (frozen) for both checks
            result = _check_json(query, archive)
            assert result["verdict"] == "likely_recycled"
            assert result["matches"][0]["event"] == "event 3"  # type: ignore[index]
        assert writer.poll() is None and _generation(archive) == frozen_at
        writer.send_signal(signal.SIGCONT)
        result = _check_json(query, archive)
        assert result["verdict"] == "likely_recycled"
    finally:
        writer.send_signal(signal.SIGCONT)
        writer.communicate(timeout=300)
    assert writer.returncode == 0
    assert _generation(archive) > frozen_at


def test_read_only_archive_gives_a_clear_error(tmp_path: Path) -> None:
    """A 0444 archive in a 0555 folder, written by a process that file modes really bind
    (as root too: the child drops the capabilities that bypass them)."""
    manifest = _make_images(tmp_path / "imgs", 5)
    desk = tmp_path / "desk"
    desk.mkdir()
    archive = desk / "desk.sqlite"
    assert _add(manifest, archive).wait(timeout=120) == 0
    before = _committed(archive)
    tmp_path.chmod(0o755)
    make_read_only(desk)
    try:
        assert_really_read_only(desk)
        out = run_without_override(
            [sys.executable, "-m", "imgverify", "archive", "add", str(manifest), "--archive",
             str(archive), "--workers", "1"], timeout=120)
        assert out.returncode == 4, out.stdout + out.stderr
        assert "read-only" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    finally:
        make_writable(desk)
    assert _committed(archive) == before
    assert _archive_check(archive)


def test_disk_full_gives_a_clear_error_and_no_damage(tmp_path: Path) -> None:
    from imgverify import Archive, ArchiveError

    manifest = _make_images(tmp_path / "imgs", 300)
    archive = Archive(tmp_path / "desk.sqlite")
    first = tmp_path / "imgs" / "first.csv"
    lines = manifest.read_text().splitlines()
    first.write_text("\n".join(lines[:11]) + "\n")
    assert ingest_manifest(archive, first).added == 10
    pages = archive._conn().execute("PRAGMA page_count").fetchone()[0]
    # a "disk" with room for only a few more pages: SQLite reports SQLITE_FULL
    archive._conn().execute(f"PRAGMA max_page_count = {pages + 3}")
    try:
        ingest_manifest(archive, manifest, batch_size=50)
    except ArchiveError as exc:
        assert "disk full" in exc.message and "nothing of this batch" in exc.message
    else:
        raise AssertionError("ingest into a full archive must fail")
    assert archive.integrity_check() == []
    assert len(archive) >= 10
    archive.close()
    reopened = Archive(tmp_path / "desk.sqlite")
    assert reopened.integrity_check() == [] and len(reopened) >= 10
