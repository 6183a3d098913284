"""`imgverify scan --cluster`: the same scan on a real Dask LocalCluster (two worker processes
on loopback) as on local processes, line for line, with resume, retry-errors and bad files;
plus the clear failures (missing extra, unreachable scheduler).

Needs the cluster extra (`distributed`): on CI these tests fail without it; elsewhere they
skip with a message.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import coco, manifest_rows, needs_shared, write_manifest
from PIL import Image
from typer.testing import CliRunner

from imgverify.cli import app

pytestmark = needs_shared
runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
TIMING = ("elapsed_ms", "checked_at")


def _distributed_or_skip() -> Any:
    try:
        import distributed
    except ImportError:
        message = "the cluster extra is not installed: pip install 'imgverify[cluster]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return distributed


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    distributed = _distributed_or_skip()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster:
        yield cluster.scheduler_address


@dataclass
class Desk:
    root: Path
    archive: Path
    scan_dir: Path  # relative to root: the scans run with root as working directory
    broken: dict[str, str]  # input as written in the output -> error kind


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Desk:
    """A small archive of 6 real photos; a folder with edited copies of 3 of them, 3 of the
    others as they are, 4 photos not archived, the shipped fixture examples, and a truncated
    and an empty file in the middle of the walk."""
    root = tmp_path_factory.mktemp("cluster")
    originals = coco(6, start=60)
    manifest = write_manifest(root / "M.csv", manifest_rows(originals))
    archive = root / "A.sqlite"
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", str(archive),
                              "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    scan_dir = root / "DIR"
    (scan_dir / "sub").mkdir(parents=True)
    for i, src in enumerate(originals):
        if i % 2:
            im = Image.open(src).convert("RGB")
            im.resize((im.width // 2, im.height // 2)).save(scan_dir / f"edit{i}.jpg",
                                                            quality=40)
        else:
            shutil.copyfile(src, scan_dir / "sub" / f"same{i}.jpg")
    for j, src in enumerate(coco(4, split="val2017")):
        shutil.copyfile(src, scan_dir / f"fresh{j}.jpg")
    for src in sorted((FIXTURES / "examples").glob("*.jpg")):
        shutil.copyfile(src, scan_dir / "sub" / src.name)
    data = originals[0].read_bytes()
    (scan_dir / "m_truncated.jpg").write_bytes(data[: len(data) // 3])
    (scan_dir / "m_empty.jpg").write_bytes(b"")
    broken = {os.path.join("DIR", "m_truncated.jpg"): "truncated_image",
              os.path.join("DIR", "m_empty.jpg"): "empty_input"}
    return Desk(root, archive, Path("DIR"), broken)


def scan(desk: Desk, out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["scan", str(desk.scan_dir), "--archive", str(desk.archive),
                               "--out", str(out), "--no-progress", *extra])


def lines(path: Path) -> list[dict[str, Any]]:
    """The output without its timing fields, which differ from run to run."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for r in records:
        for field in TIMING:
            r.pop(field, None)
    return records


@pytest.fixture(scope="module")
def local(desk: Desk, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    cwd = os.getcwd()
    os.chdir(desk.root)
    try:
        res = scan(desk, out, "--workers", "2")
    finally:
        os.chdir(cwd)
    assert res.exit_code == 3, res.output  # completed; two inputs failed
    return lines(out)


@pytest.fixture()
def in_desk(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> Desk:
    """Relative inputs, as a user types them: the workers' working directory is not this
    one, so the cluster path has to resolve them."""
    monkeypatch.chdir(desk.root)
    return desk


def test_cluster_scan_is_the_local_scan_line_for_line(in_desk: Desk, scheduler: str,
                                                      local: list[dict[str, Any]],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "cluster.jsonl"
    res = scan(in_desk, out, "--cluster", scheduler)
    assert res.exit_code == 3, res.output
    got = lines(out)
    assert got == local
    assert len(got) == 15
    verdicts = {r["input"]: r["verdict"] for r in got}
    assert sum(v == "likely_recycled" for v in verdicts.values()) >= 6, verdicts
    for name, kind in in_desk.broken.items():  # the bad files are error lines, in place
        line = next(r for r in got if r["input"] == name)
        assert line["error"]["kind"] == kind
        assert str(in_desk.root) not in line["error"]["message"]  # named as given
    assert got[-1]["input"].endswith("viral_space_repost.jpg")  # the run went on past them
    assert "15 checked" in res.stderr


def test_cluster_resume_finishes_a_partial_output(in_desk: Desk, scheduler: str,
                                                  local: list[dict[str, Any]],
                                                  tmp_path: Path) -> None:
    out = tmp_path / "partial.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in local[:7])
    out.write_text(text + json.dumps(local[7])[:40], encoding="utf-8")  # a crash mid-line
    res = scan(in_desk, out, "--resume", "--cluster", scheduler)
    assert res.exit_code == 3, res.output
    assert "8 checked" in res.stderr and "7 skipped" in res.stderr
    assert lines(out) == local


def test_cluster_retry_errors_rechecks_the_failed_inputs(in_desk: Desk, scheduler: str,
                                                         local: list[dict[str, Any]],
                                                         tmp_path: Path) -> None:
    """A file that was still being copied (empty) is checked again once it is whole."""
    fixed = in_desk.root / "DIR2"
    shutil.copytree(in_desk.root / in_desk.scan_dir, fixed)
    out = tmp_path / "retry.jsonl"
    res = runner.invoke(app, ["scan", "DIR2", "--archive", str(in_desk.archive), "--out",
                              str(out), "--no-progress", "--cluster", scheduler])
    assert res.exit_code == 3, res.output
    first = lines(out)
    shutil.copyfile(in_desk.root / "DIR" / "sub" / "same0.jpg", fixed / "m_empty.jpg")
    res = runner.invoke(app, ["scan", "DIR2", "--archive", str(in_desk.archive), "--out",
                              str(out), "--no-progress", "--cluster", scheduler, "--resume",
                              "--retry-errors"])
    assert "2 checked" in res.stderr, res.output  # only the two error lines
    after = lines(out)
    # the failed lines are replaced in place (one line per input, same order)
    assert [r["input"] for r in after] == [r["input"] for r in first]
    retried = {os.path.join("DIR2", "m_empty.jpg"), os.path.join("DIR2", "m_truncated.jpg")}
    assert [a for a in after if a["input"] not in retried] == \
        [f for f in first if f["input"] not in retried]
    by_input = {r["input"]: r for r in after}
    assert by_input[os.path.join("DIR2", "m_empty.jpg")]["verdict"] == "likely_recycled"
    assert by_input[os.path.join("DIR2", "m_truncated.jpg")]["error"]["kind"] == \
        "truncated_image"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_scheduler_is_one_message_and_exit_4(desk: Desk, tmp_path: Path) -> None:
    _distributed_or_skip()
    import dask

    address = f"tcp://127.0.0.1:{_closed_port()}"
    out = tmp_path / "never.jsonl"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        res = scan(desk, out, "--cluster", address)
    assert res.exit_code == 4, res.output
    assert f"cannot reach the Dask scheduler at {address}" in res.stderr
    assert "Traceback" not in res.output
    assert not out.exists()  # failed before the output was opened


BLOCK_DISTRIBUTED = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("blocked for the test: " + name)
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["imgverify", *sys.argv[1:]]
from imgverify.cli import run
run()
"""


def test_missing_extra_says_how_to_install_it(desk: Desk, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", BLOCK_DISTRIBUTED, "scan", str(desk.scan_dir),
                          "--archive", str(desk.archive), "--no-progress", "--cluster",
                          "tcp://127.0.0.1:8786"], cwd=desk.root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 4, res.stderr
    assert ("scanning on a cluster needs the cluster extra: pip install 'imgverify[cluster]'"
            in res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_time_limit_reaches_a_worker_thread() -> None:
    """Dask runs tasks on worker threads, where SIGALRM cannot go: --timeout still applies."""
    from imgverify.batch import _Alarm, _time_limit

    outcome: list[str] = []

    def spin() -> None:
        try:
            with _time_limit(0.2):
                while True:
                    pass
        except _Alarm:
            outcome.append("timed out")

    worker = threading.Thread(target=spin, daemon=True)
    worker.start()
    worker.join(30)
    assert outcome == ["timed out"]


def test_time_limit_does_not_fire_after_the_block(tmp_path: Path) -> None:
    from imgverify.batch import _time_limit

    outcome: list[str] = []

    def quick() -> None:
        with _time_limit(0.05):
            pass
        threading.Event().wait(0.3)  # past the deadline: nothing may land here
        outcome.append("finished")

    worker = threading.Thread(target=quick, daemon=True)
    worker.start()
    worker.join(30)
    assert outcome == ["finished"]


def test_a_worker_killed_mid_scan_loses_no_line(in_desk: Desk, local: list[dict[str, Any]]
                                                ) -> None:
    """A worker dies (SIGKILL: out of memory, a crashing decoder) while it checks a batch.
    With no retries allowed on the scheduler, Dask fails that batch at once: its inputs are
    checked again one by one, and the output is still the local scan's."""
    import io
    import signal

    distributed = _distributed_or_skip()
    import dask

    from imgverify.batch import LineWriter, ScanConfig, iter_inputs, scan
    from imgverify.cluster import ClusterExecutor

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, host="127.0.0.1") as cluster, \
            ClusterExecutor(cluster.scheduler_address, batch_size=2) as executor:
        killed: list[int] = []

        def kill_a_busy_worker(_result: dict[str, Any]) -> None:
            if killed:
                return
            busy = [w for w, keys in executor.client.processing().items() if keys]
            if busy:
                pid = executor.client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        stream = io.StringIO()
        summary = scan(iter_inputs([str(in_desk.scan_dir)]),
                       ScanConfig(archive_path=str(in_desk.archive)),
                       LineWriter(stream, "jsonl", True), cluster=executor,
                       on_result=kill_a_busy_worker)
    assert killed, "no worker was busy after the first result: nothing was tested"
    got = [json.loads(line) for line in stream.getvalue().splitlines()]
    for r in got:
        for field in TIMING:
            r.pop(field, None)
    assert got == local
    assert summary.total == len(local)


def test_a_worker_killed_on_a_batch_of_one_input_loses_no_line(
        in_desk: Desk, local: list[dict[str, Any]]) -> None:
    """The last batch of a scan often holds one input. Its worker is killed while it
    checks it (no retries on the scheduler): the input is sent again, not written as an
    internal error (a batch of one was not retried, only the parts of a split batch)."""
    import io
    import signal
    import time

    distributed = _distributed_or_skip()
    import dask

    from imgverify.batch import LineWriter, ScanConfig, iter_inputs, scan
    from imgverify.cluster import ClusterExecutor

    one = next(r for r in local if r["verdict"] == "likely_recycled")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, host="127.0.0.1") as cluster, \
            ClusterExecutor(cluster.scheduler_address, batch_size=2) as executor:
        killed: list[int] = []

        def kill_when_busy() -> None:
            # the first check on a worker opens the archive: seconds, while this polls
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                busy = [w for w, keys in executor.client.processing().items() if keys]
                if busy:
                    pid = executor.client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        stream = io.StringIO()
        try:
            summary = scan(iter_inputs([one["input"]]),
                           ScanConfig(archive_path=str(in_desk.archive)),
                           LineWriter(stream, "jsonl", True), cluster=executor)
        finally:
            killer.join()
    assert killed, "no worker was seen busy: nothing was tested"
    got = [json.loads(line) for line in stream.getvalue().splitlines()]
    for r in got:
        for field in TIMING:
            r.pop(field, None)
    assert got == [one]
    assert summary.total == 1


def test_an_archive_the_workers_cannot_open_stops_the_run(scheduler: str,
                                                           tmp_path: Path) -> None:
    """Every line would fail alike (the archive is not at the same path on the workers):
    one ArchiveError (exit 4 on the command line) instead of an error line per input."""
    from imgverify.batch import ScanConfig
    from imgverify.cluster import ClusterExecutor
    from imgverify.errors import ArchiveError

    missing = tmp_path / "not-on-the-workers.sqlite"
    with ClusterExecutor(scheduler) as executor:
        lines_out = executor.map(ScanConfig(archive_path=str(missing)),
                                 [str(p) for p in coco(3, split="val2017")])
        with pytest.raises(ArchiveError, match="cannot open the archive.*same path"):
            next(lines_out)


def test_losing_the_scheduler_stops_the_run_with_one_message(in_desk: Desk) -> None:
    """The scheduler goes away mid-scan: every outstanding task is cancelled. That is one
    ClusterError (exit 4), with the lines written so far whole, never an error line per
    input that a --resume would then skip."""
    import io

    distributed = _distributed_or_skip()
    import dask

    from imgverify.batch import LineWriter, ScanConfig, iter_inputs, scan
    from imgverify.cluster import ClusterError, ClusterExecutor

    stream = io.StringIO()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, host="127.0.0.1") as cluster, \
            ClusterExecutor(cluster.scheduler_address, batch_size=1) as executor:

        def stop_the_cluster(_result: dict[str, Any]) -> None:
            if cluster.status.name == "running":
                cluster.close()

        with pytest.raises(ClusterError, match="lost the connection.*--resume"):
            scan(iter_inputs([str(in_desk.scan_dir)]),
                 ScanConfig(archive_path=str(in_desk.archive)),
                 LineWriter(stream, "jsonl", True), cluster=executor,
                 on_result=stop_the_cluster)
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert 1 <= len(written) < 15
    assert all(r["verdict"] != "error" or r["input"] in in_desk.broken for r in written)


def test_inputs_are_read_only_a_bounded_window_ahead(desk: Desk, scheduler: str) -> None:
    """Millions of inputs: the scan reads them lazily, a few batches per worker thread ahead
    of the output, so memory stays flat. Here the inputs never end; the run is stopped after
    its first line."""
    import io
    import itertools

    from imgverify.batch import LineWriter, ScanConfig, scan
    from imgverify.cluster import WINDOW_PER_THREAD, ClusterExecutor

    class Enough(Exception):
        pass

    pulled = 0

    def endless() -> Iterator[str]:
        nonlocal pulled
        for _ in itertools.count():
            pulled += 1
            yield str(FIXTURES / "not_archived" / "coffee.jpg")

    def stop(_result: dict[str, Any]) -> None:
        raise Enough()

    with ClusterExecutor(scheduler, batch_size=4) as executor:
        bound = (WINDOW_PER_THREAD * executor.threads() + 1) * 4
        with pytest.raises(Enough):
            scan(endless(), ScanConfig(archive_path=str(desk.archive)),
                 LineWriter(io.StringIO(), "jsonl", True), cluster=executor, on_result=stop)
        assert executor.threads() == 2
    assert 4 <= pulled <= bound
