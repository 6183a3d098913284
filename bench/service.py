"""Load test of `imgverify serve` on loopback: latency (p50/p99) and throughput of
POST /v1/check at 1, 8 and 32 concurrent clients.

    python bench/service.py [--references 100] [--requests 64] [--clients 1,8,32]
        [--workers 0] [--endpoint check|health]

The server runs as a real `imgverify serve` subprocess on 127.0.0.1 with a bearer token and
an archive of coco128 photos; every client is a thread with its own HTTP session uploading
real photos (half archived, half not, so both the match and the no-match paths are timed).
Each level sends a fixed number of requests after a short warm-up, then the run stops by
itself. Clients share the machine with the server, and on a shared machine other load moves
the figures: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

import imgverify  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_archive(folder: Path, n: int) -> Path:
    photos = sorted((PHOTOS / "coco128" / "train2017").glob("*.jpg"))[:n]
    manifest = folder / "refs.csv"
    manifest.write_text("image,date,event\n" + "".join(
        f"{p},2016-05-{i % 28 + 1:02d},Event {i}\n" for i, p in enumerate(photos)))
    path = folder / "bench.sqlite"
    with imgverify.Archive.open(path) as arch:
        report = arch.ingest(manifest, workers=2)
    if report.errors:
        raise SystemExit(f"ingest failed: {report.errors[:3]}")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run_level(url: str, token: str, payloads: list[tuple[str, bytes]], clients: int,
              total: int, endpoint: str) -> tuple[list[float], float, dict[int, int]]:
    per_client = max(1, total // clients)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        mine: list[float] = []
        codes: list[int] = []
        start.wait()
        for j in range(per_client):
            name, data = payloads[(i * per_client + j) % len(payloads)]
            t = time.perf_counter()
            if endpoint == "health":
                r = session.get(f"{url}/v1/health", timeout=120)
            else:
                r = session.post(f"{url}/v1/check", files={"image": (name, data)}, timeout=120)
            mine.append((time.perf_counter() - t) * 1000)
            codes.append(r.status_code)
        session.close()
        with lock:
            latencies.extend(mine)
            for c in codes:
                statuses[c] = statuses.get(c, 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return latencies, wall, statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--references", type=int, default=100, help="coco128 photos archived")
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--workers", type=int, default=0, help="server check threads (0 = cores)")
    ap.add_argument("--endpoint", choices=("check", "health"), default="check")
    args = ap.parse_args()
    if not (PHOTOS / "coco128").is_dir():
        raise SystemExit(f"shared photos not found at {PHOTOS}")
    tmp = Path(tempfile.mkdtemp(prefix="imgverify-bench-service-"))
    t = time.perf_counter()
    archive = build_archive(tmp, args.references)
    print(f"archive: {args.references} coco128 references, built in "
          f"{time.perf_counter() - t:.1f} s")
    archived = sorted((PHOTOS / "coco128" / "train2017").glob("*.jpg"))[:args.references]
    fresh = sorted((PHOTOS / "bsds500" / "test").glob("*.jpg"))[:len(archived)]
    payloads = [(p.name, p.read_bytes()) for pair in zip(archived, fresh, strict=False)
                for p in pair]
    token = secrets.token_urlsafe(24)
    port = free_port()
    env = dict(os.environ, IMGVERIFY_TOKEN=token,
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT),
                                                        os.environ.get("PYTHONPATH")))))
    cmd = [sys.executable, "-m", "imgverify", "serve", "--port", str(port), "--archive",
           str(archive), "--log-level", "warning", "--timeout", "120",
           "--max-pending", "1000"]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                if requests.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.1)
        run_level(url, token, payloads, 2, 8, args.endpoint)  # warm-up: caches, connections
        print(f"endpoint: {args.endpoint}; cores: {os.cpu_count()}; server workers: "
              f"{args.workers or 'one per core'}; load average before: "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"{'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}  statuses")
        for clients in [int(c) for c in args.clients.split(",")]:
            lat, wall, statuses = run_level(url, token, payloads, clients, args.requests,
                                            args.endpoint)
            print(f"{clients:>7} {len(lat):>8} {statistics.median(lat):>8.0f} "
                  f"{percentile(lat, 0.99):>8.0f} {len(lat) / wall:>7.1f}  "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())), flush=True)
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
