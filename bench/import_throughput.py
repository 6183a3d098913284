"""Import throughput: a Commons category served by the local fixture wiki (tests/), imported
into a fresh archive. Reports files/s overall and the time spent waiting on the (loopback)
server, so the figure can be read as imgverify's own cost; against the real Commons the
rate limit (--min-interval, default 0.2 s) and the network dominate.

    python bench/import_throughput.py [--files 100] [--min-interval 0]
    python bench/import_throughput.py --telegram [--files 100]   # a Telegram Desktop export
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from import_fixtures import FixtureWiki, WikiFile, jpeg_of, serve  # noqa: E402

from imgverify.ingest.importers.commons import CommonsOptions, import_commons  # noqa: E402
from imgverify.ingest.importers.http import ClientConfig, PoliteClient  # noqa: E402
from imgverify.ingest.importers.ingest import Importer  # noqa: E402
from imgverify.store.sqlite import Archive  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos" / "coco128" / "train2017"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--min-interval", type=float, default=0.0)
    ap.add_argument("--telegram", action="store_true", help="import a Telegram export folder "
                    "(no network) instead of a Commons category")
    args = ap.parse_args()
    from imgverify.batch import one_native_thread

    one_native_thread()  # as the import commands do
    photos = sorted(PHOTOS.glob("*.jpg"))[:args.files]
    if args.telegram:
        telegram(photos)
        return
    wiki = FixtureWiki(page_size=50)
    for i, p in enumerate(photos):
        wiki.add_file("Category:Bench", WikiFile(
            f"File:Bench {i}.jpg", jpeg_of(p, 1600), timestamp="2023-10-10T08:00:00Z",
            extmetadata={"DateTimeOriginal": "2023-10-07 10:00:00",
                         "ImageDescription": f"photo {i}", "Artist": "Bench",
                         "LicenseShortName": "CC0"}))
    with serve(wiki) as base, tempfile.TemporaryDirectory() as tmp:
        for f in wiki.files.values():  # warm the fixture's thumbnail cache: not our cost
            import urllib.request
            urllib.request.urlopen(f"{base}/thumb/{f.name}").read()
        client = PoliteClient(ClientConfig(contact="bench@example.org", allow_private=True,
                                           min_interval=args.min_interval))
        with Archive.open(Path(tmp) / "bench.sqlite") as arch:
            started = time.perf_counter()
            report = import_commons(Importer(arch), client, "Category:Bench",
                                    CommonsOptions(api_url=f"{base}/w/api.php"))
            elapsed = time.perf_counter() - started
    n = report.references_added
    print(f"{n} files in {elapsed:.1f} s = {n / elapsed:.1f} files/s; of which waiting on the "
          f"loopback server {report.network_seconds:.1f} s ({report.http_requests} requests, "
          f"{report.http_retries} retries); imgverify's own work "
          f"{(elapsed - report.network_seconds) / max(1, n) * 1000:.0f} ms/file")


def telegram(photos: list[Path]) -> None:
    import json

    from imgverify.ingest.importers.folder import import_folder

    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "ChatExport"
        (export / "photos").mkdir(parents=True)
        messages = []
        for i, p in enumerate(photos):
            name = f"photos/photo_{i}@24-12-2024_10-00-00.jpg"
            (export / name).write_bytes(jpeg_of(p, 1280, 85))
            messages.append({"id": i + 1, "type": "message", "date": "2024-12-24T10:00:00",
                             "date_unixtime": str(1735034400 + i), "from": "Channel",
                             "photo": name, "text": f"post {i}"})
        (export / "result.json").write_text(json.dumps({
            "name": "Channel", "type": "public_channel", "id": 1, "messages": messages}))
        with Archive.open(Path(tmp) / "bench.sqlite") as arch:
            started = time.perf_counter()
            report = import_folder(Importer(arch), export)
            elapsed = time.perf_counter() - started
    n = report.sightings_added
    print(f"Telegram export: {n} photos in {elapsed:.1f} s = {n / elapsed:.1f} files/s "
          f"(no network; each matched against the archive before it is kept: "
          f"{report.own_records} unverified records, {report.linked} linked)")


if __name__ == "__main__":
    main()
