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

from imgverify.archive import Archive  # noqa: E402


def build(out: Path = HERE / "default.sqlite") -> dict[str, object]:
    tmp = out.with_suffix(".tmp.sqlite")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    archive = Archive(tmp)
    report = archive.ingest(HERE / "manifest.csv", workers=1)
    if report.errors:
        raise SystemExit(f"manifest errors: {[e.to_dict() for e in report.errors]}")
    # image paths are stored relative to the project so the archive names no machine's paths
    conn = archive._conn()
    with conn:
        for ref in list(archive.iter_references()):
            rel = os.path.relpath(ref.image_uri or "", HERE.parent)
            conn.execute("UPDATE refs SET image_uri=? WHERE id=?", (rel, ref.key))
    archive.close()
    conn2 = sqlite3.connect(tmp)
    conn2.execute("PRAGMA journal_mode=DELETE")
    conn2.execute("VACUUM")
    conn2.close()
    os.replace(tmp, out)
    return {"archive": str(out.relative_to(HERE.parent)), **report.to_dict()}


if __name__ == "__main__":
    print(build())
