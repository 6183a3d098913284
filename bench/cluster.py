"""Cluster benchmark: the same scan on 2 local worker processes and on a Dask LocalCluster
with 2 worker processes (loopback), in images/s, and the cluster's task batch size.

    python bench/cluster.py [--photos 120] [--batch-sizes 1,8,32]

Both scans go through the command line (process start-up included, the cluster's own
start-up timed apart: a real scheduler is already running). The outputs are compared line
for line (timing fields dropped). Nothing here asserts on time: it prints what it measured.
Needs the cluster extra: pip install 'imgverify[cluster]'.
"""

from __future__ import annotations

import argparse
import io
import json
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
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=120)
    ap.add_argument("--batch-sizes", default="1,8,32")
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

    t = time.perf_counter()
    local = subprocess.run(exe + ["scan", str(folder / "in"), "--archive", str(arch),
                                  "--workers", "2", "--no-progress"],
                           capture_output=True, text=True)
    local_rate = len(files) / (time.perf_counter() - t)
    print(f"   local scan, --workers 2:              {local_rate:5.1f} images/s")

    t = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster:
        print(f"   (LocalCluster start-up {time.perf_counter() - t:.1f} s, not counted)")
        for run in ("new workers", "warm workers"):
            # new workers import imgverify's modules (OpenCV, faiss...) on their first task;
            # a standing cluster pays that once, not per scan
            t = time.perf_counter()
            remote = subprocess.run(exe + ["scan", str(folder / "in"), "--archive", str(arch),
                                           "--cluster", cluster.scheduler_address,
                                           "--no-progress"], capture_output=True, text=True)
            rate = len(files) / (time.perf_counter() - t)
            same = lines(remote.stdout) == lines(local.stdout)
            print(f"   --cluster, 2 workers, {run + ':':14s}{rate:5.1f} images/s "
                  f"({rate / local_rate:.2f}x the local scan; output identical: {same})")
        for size in (int(s) for s in args.batch_sizes.split(",") if s):
            with ClusterExecutor(cluster.scheduler_address, batch_size=size) as executor:
                out = io.StringIO()
                t = time.perf_counter()
                summary = scan(iter_inputs([str(folder / "in")]),
                               ScanConfig(archive_path=str(arch)),
                               LineWriter(out, "jsonl", True), cluster=executor)
                secs = time.perf_counter() - t
            same = lines(out.getvalue()) == lines(local.stdout)
            print(f"   batch size {size:3d} (library call, warm): {summary.total / secs:5.1f} "
                  f"images/s (output identical: {same})")


if __name__ == "__main__":
    main()
