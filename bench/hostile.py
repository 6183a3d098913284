"""Time to a typed result for every file of the hostile-input corpus (fixtures/hostile/).

Bombs, truncated and malformed files must be refused from their headers or decoded at
bounded cost. This prints the time per file against the shipped default archive; it never
fails on a time (tests/test_hostile.py checks the verdicts and error kinds).

    python bench/hostile.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import imgverify

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "hostile" / "corpus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import logging
    import warnings

    warnings.simplefilter("ignore")  # this script is the host: Pillow's notes are noise here
    logging.getLogger("exifread").setLevel(logging.CRITICAL)
    archive = imgverify.Archive.default()
    rows = []
    for path in sorted(CORPUS.iterdir()):
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = imgverify.check(path, archive)
            times.append((time.perf_counter() - started) * 1000)
        kind = result.error["kind"] if result.error else result.verdict
        rows.append((statistics.median(times), path.name, kind, path.stat().st_size))
    print(f"{'file':<40} {'bytes':>10} {'outcome':<22} {'median ms':>10}")
    for ms, name, kind, size in sorted(rows, reverse=True):
        print(f"{name:<40} {size:>10,} {kind:<22} {ms:>10.1f}")
    print(f"slowest {rows and max(r[0] for r in rows):.1f} ms, median "
          f"{statistics.median(r[0] for r in rows):.1f} ms over {len(rows)} files")


if __name__ == "__main__":
    main()
