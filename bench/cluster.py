"""Cluster benchmark: the same scan on 2 local worker processes and on a Dask LocalCluster
with 2 worker processes (loopback), in images/s, and the cluster's task batch size.

    python bench/cluster.py [--photos 120] [--batch-sizes 1,8,32] [--rounds 3]

Both scans go through the command line (process start-up included, the cluster's own
start-up timed apart: a real scheduler is already running), alternated over a few rounds
(medians), since a shared machine's load drifts. The outputs are compared line
for line (timing fields dropped). Nothing here asserts on time: it prints what it measured.
Needs the cluster extra: pip install 'imgverify[cluster]'.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgverify.batch import LineWriter, ScanConfig, iter_inputs, scan  # noqa: E402
from imgverify.cluster import ClusterExecutor  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def lines(text: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in text.splitlines()]
    for r in records:
        r.pop("elapsed_ms", None)
        r.pop("checked_at", None)
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=120)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import distributed

    files = (sorted((PHOTOS / "bsds500").rglob("*.jpg"))
             + sorted((PHOTOS / "coco128").rglob("*.jpg")))[: args.photos]
    folder = Path(tempfile.mkdtemp())
    (folder / "in").mkdir()
    for p in files:
        (folder / "in" / f"{p.parent.name}-{p.name}").symlink_to(p)
    manifest = folder / "m.csv"
    manifest.write_text("image,date\n" + "".join(f"{p},2020-01-01\n" for p in files[::2]))
    arch = folder / "a.sqlite"
    exe = [sys.executable, "-m", "imgverify"]
    subprocess.run(exe + ["archive", "add", str(manifest), "--archive", str(arch)],
                   check=True, capture_output=True)
    subprocess.run(exe + ["check", str(files[1]), "--archive", str(arch), "--format", "json"],
                   capture_output=True)  # first use builds the caches: not part of a scan
    print(f"Scan of {len(files)} real photos (half archived), 2 workers each")

    def cli_scan(*extra: str) -> tuple[float, str]:
        t = time.perf_counter()
        done = subprocess.run(exe + ["scan", str(folder / "in"), "--archive", str(arch),
                                     "--no-progress", *extra], capture_output=True, text=True)
        return len(files) / (time.perf_counter() - t), done.stdout

    t = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster:
        print(f"   (LocalCluster start-up {time.perf_counter() - t:.1f} s, not counted)")
        on_cluster = ("--cluster", cluster.scheduler_address)
        # new workers import imgverify's modules (OpenCV, faiss...) on their first task; a
        # standing cluster pays that once, not per scan
        cold, _ = cli_scan(*on_cluster)
        local_rates: list[float] = []
        cluster_rates: list[float] = []
        same = True
        for _ in range(args.rounds):  # alternated: the load of a shared machine drifts
            rate, local = cli_scan("--workers", "2")
            local_rates.append(rate)
            rate, remote = cli_scan(*on_cluster)
            cluster_rates.append(rate)
            same = same and lines(remote) == lines(local)
        local_rate = statistics.median(local_rates)
        rate = statistics.median(cluster_rates)
        print(f"   local scan, --workers 2:              {local_rate:5.1f} images/s "
              f"(median of {args.rounds}: {', '.join(f'{r:.1f}' for r in local_rates)})")
        print(f"   --cluster, 2 workers:                 {rate:5.1f} images/s "
              f"(median of {args.rounds}: {', '.join(f'{r:.1f}' for r in cluster_rates)}); "
              f"{rate / local_rate:.2f}x the local scan; output identical: {same}")
        print(f"   --cluster, first scan on new workers: {cold:5.1f} images/s")
        for size in (int(s) for s in args.batch_sizes.split(",") if s):
            with ClusterExecutor(cluster.scheduler_address, batch_size=size) as executor:
                out = io.StringIO()
                t = time.perf_counter()
                summary = scan(iter_inputs([str(folder / "in")]),
                               ScanConfig(archive_path=str(arch)),
                               LineWriter(out, "jsonl", True), cluster=executor)
                secs = time.perf_counter() - t
            same = lines(out.getvalue()) == lines(local)
            print(f"   batch size {size:3d} (library call, warm): {summary.total / secs:5.1f} "
                  f"images/s (output identical: {same})")


if __name__ == "__main__":
    main()
