"""Rebuild the shipped default archive (reference_index/default.sqlite) from manifest.csv.

Run from anywhere: `python reference_index/build.py`. The result is written to a temporary
file, compacted, switched to rollback-journal mode (so it opens read-only from a read-only
install) and moved into place atomically.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from imgverify.ingest import ingest_manifest  # noqa: E402
from imgverify.store.sqlite import Archive  # noqa: E402


def build(out: Path = HERE / "default.sqlite") -> dict[str, object]:
    tmp = out.with_suffix(".tmp.sqlite")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    archive = Archive(tmp)
    report = ingest_manifest(archive, HERE / "manifest.csv", workers=1)
    if report.errors:
        raise SystemExit(f"manifest errors: {[e.to_dict() for e in report.errors]}")
    # image paths are stored relative to the project so the archive names no machine's paths
    conn = archive._conn()
    with conn:
        for ref in list(archive.iter_references()):
            rel = os.path.relpath(ref.image_uri or "", HERE.parent)
            conn.execute("UPDATE refs SET image_uri=? WHERE id=?", (rel, ref.key))
    archive.close()  # every connection: SQLite leaves WAL mode only when it holds the last one
    conn2 = sqlite3.connect(tmp)
    mode = conn2.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    conn2.execute("VACUUM")
    conn2.close()
    # the pragma reports the mode it is left in rather than failing: check, and check the
    # file header too (bytes 18-19 are 1, 1 in rollback-journal mode, 2, 2 in WAL mode)
    header = tmp.read_bytes()[:20]
    if mode != "delete" or header[18:20] != b"\x01\x01":
        raise SystemExit(f"{tmp} is still in {mode} mode: it would not open from a "
                         "read-only install")
    os.replace(tmp, out)
    return {"archive": str(out.relative_to(HERE.parent)), **report.to_dict()}


if __name__ == "__main__":
    print(build())
