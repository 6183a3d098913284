"""Opening and closing archives: the shipped default opens from a read-only install, a user's
WAL archive in a read-only folder gets an error that says what to do, `close()` closes every
thread's connection, `check()` without an archive does not open one per call, and a reference
removed while a check runs is skipped rather than raising."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from privileges import (
    assert_really_read_only,
    make_read_only,
    make_writable,
    run_without_override,
)

import imgverify
from imgverify.store.sqlite import default_archive_path, resolve_archive

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "reference_index" / "default.sqlite"
SHIPPED_IMAGE = ROOT / "reference_index" / "images" / "dscovr_launch.jpg"


def open_handles(path: Path) -> int:
    """File descriptors of this process on `path` (or its -wal / -shm / -journal files)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path.resolve())):
                count += 1
        except OSError:
            continue  # closed since the listing
    return count


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="counting open handles needs /proc/self/fd (Linux)")


@pytest.fixture()
def ro_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder the test makes read-only; world-traversable, made writable again afterwards."""
    tmp_path.chmod(0o755)
    folder = tmp_path / "ro"
    folder.mkdir()
    yield folder
    make_writable(folder)


def _check_cli(image: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return run_without_override([sys.executable, "-m", "imgverify", "check", str(image),
                                 "--format", "json", *extra], env=env, cwd="/", timeout=300)


# -- the shipped archive from a read-only install ----------------------------------------------
def test_shipped_archive_is_in_rollback_journal_mode() -> None:
    """Bytes 18-19 of an SQLite header are 1, 1 in rollback-journal mode and 2, 2 in WAL mode;
    a WAL file needs a writable folder even to be read."""
    header = SHIPPED.read_bytes()[:20]
    assert header[18:20] == b"\x01\x01", "rebuild it: python reference_index/build.py"


@pytest.mark.parametrize("layout", ["installed", "override"])
def test_shipped_archive_checks_from_a_read_only_install(ro_dir: Path, layout: str) -> None:
    """`installed`: the package and its data/default.sqlite copied into a read-only folder, as
    a system-wide install leaves them. `override`: only the archive, named by
    $IMGVERIFY_DEFAULT_ARCHIVE (opened plainly read-only, so the file itself must be in
    rollback-journal mode)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("IMGVERIFY_DEFAULT_ARCHIVE", "IMGVERIFY_ARCHIVE", "PYTHONPATH")}
    if layout == "installed":
        package = ro_dir / "imgverify"
        shutil.copytree(ROOT / "imgverify", package,
                        ignore=shutil.ignore_patterns("__pycache__"))
        (package / "data").mkdir(exist_ok=True)
        shutil.copy(SHIPPED, package / "data" / "default.sqlite")
        env["PYTHONPATH"] = str(ro_dir)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        shutil.copy(SHIPPED, ro_dir / "default.sqlite")
        env["PYTHONPATH"] = str(ROOT)
        env["IMGVERIFY_DEFAULT_ARCHIVE"] = str(ro_dir / "default.sqlite")
    make_read_only(ro_dir)
    assert_really_read_only(ro_dir)
    before = sorted(p.name for p in ro_dir.rglob("*"))

    out = _check_cli(SHIPPED_IMAGE, env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] == "likely_recycled"
    assert result["matches"][0]["date"] == "2015-02-11"
    assert sorted(p.name for p in ro_dir.rglob("*")) == before, "nothing may be written there"
    if layout == "installed":  # the child really imported the read-only copy
        probe = run_without_override(
            [sys.executable, "-c", "import imgverify.store.sqlite as a; "
             "print(a.__file__); print(a.default_archive_path())"], env=env, cwd="/", timeout=60)
        assert probe.stdout.split() == [str(package / "store" / "sqlite.py"),
                                        str(package / "data" / "default.sqlite")]


def test_wal_archive_in_a_read_only_folder_says_what_to_do(ro_dir: Path,
                                                           archive_copy: Path) -> None:
    """SQLite cannot read a WAL-mode file from a folder where it cannot create -wal/-shm: the
    user gets that explained with the fix, not "attempt to write a readonly database"; after
    the suggested fix the same check works."""
    archive = ro_dir / "desk.sqlite"
    shutil.copy(archive_copy, archive)
    conn = sqlite3.connect(archive)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    for leftover in ro_dir.glob("desk.sqlite-*"):
        leftover.unlink()
    make_read_only(ro_dir)
    assert_really_read_only(ro_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    image = _image_of(archive_copy, 0)

    out = _check_cli(image, env, "--archive", str(archive))
    assert out.returncode == 4, out.stderr
    assert "WAL mode" in out.stderr and "journal_mode=DELETE" in out.stderr, out.stderr
    assert "attempt to write" not in out.stderr
    assert "Traceback" not in out.stderr

    make_writable(ro_dir)
    conn = sqlite3.connect(archive)
    assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    conn.close()
    make_read_only(ro_dir)
    out = _check_cli(image, env, "--archive", str(archive))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verdict"] == "likely_recycled"


def _image_of(archive: Path, n: int) -> Path:
    """The image file of the archive's n-th reference."""
    conn = sqlite3.connect(f"file:{archive}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT image_uri FROM refs ORDER BY id").fetchall()
    finally:
        conn.close()
    return Path(rows[n][0])


def test_the_shipped_archive_is_never_opened_for_writing() -> None:
    """Even named by --archive from a writable checkout: a writable open would switch it to WAL
    mode, and the next read-only install of it would fail."""
    with pytest.raises(imgverify.ArchiveError, match="shipped default archive"):
        resolve_archive(SHIPPED, writable=True)
    arch = resolve_archive(SHIPPED)
    try:
        assert arch.readonly
        assert len(arch) == 3
    finally:
        arch.close()
    assert SHIPPED.read_bytes()[18:20] == b"\x01\x01"


# -- connections -------------------------------------------------------------------------------
@needs_proc
def test_close_closes_every_threads_connection(archive_copy: Path) -> None:
    arch = imgverify.Archive.open(archive_copy, readonly=True)
    barrier = threading.Barrier(8)
    holding = threading.Event()
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            counts.append(len(arch))
            barrier.wait(timeout=60)
            holding.wait(timeout=60)  # alive, connection in hand, while close() runs
            len(arch)
        except imgverify.ArchiveError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    while len(counts) < 8 and any(t.is_alive() for t in threads):
        threading.Event().wait(0.01)
    assert counts == [20] * 8
    assert open_handles(archive_copy) >= 8
    arch.close()
    assert open_handles(archive_copy) == 0
    holding.set()
    for t in threads:
        t.join(timeout=60)
    assert len(errors) == 8
    assert all("is closed" in e.message for e in errors)
    with pytest.raises(imgverify.ArchiveError, match="is closed"):
        arch.get("anything")
    arch.close()  # twice is fine


@needs_proc
def test_a_finished_threads_connection_is_closed(archive_copy: Path) -> None:
    """A thread-per-request server must not pile up one connection per request."""
    with imgverify.Archive.open(archive_copy, readonly=True) as arch:
        len(arch)
        alone = open_handles(archive_copy)  # this thread's connection: file, -wal, -shm
        for _ in range(10):
            t = threading.Thread(target=lambda: len(arch))
            t.start()
            t.join()
        # SQLite may keep one descriptor of a closed connection for reuse while another
        # connection of the process holds a POSIX lock on the file; ten would pile up ten
        assert open_handles(archive_copy) <= alone + 1


@needs_proc
def test_check_without_an_archive_reuses_one() -> None:
    path = default_archive_path()
    first = imgverify.check(SHIPPED_IMAGE)
    assert first.verdict == "likely_recycled"
    after_one = open_handles(path)
    assert after_one >= 1
    for _ in range(5):
        assert imgverify.check(SHIPPED_IMAGE).verdict == "likely_recycled"
    assert open_handles(path) <= after_one


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection(archive_copy: Path) -> None:
    """SQLite forbids using a connection across fork (a pre-forking server that checked once
    before forking, through the shared default archive, would otherwise do exactly that)."""
    with imgverify.Archive.open(archive_copy, readonly=True) as arch:
        parents = arch._conn()
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            ok = arch._conn() is not parents and len(arch) == 20
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert arch._conn() is parents and len(arch) == 20


def test_a_refused_archive_leaves_no_handle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    conn = sqlite3.connect(junk)
    conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(imgverify.ArchiveError):
        imgverify.Archive.open(junk, readonly=True)
    if Path("/proc/self/fd").is_dir():
        assert open_handles(junk) == 0


# -- a reference removed while a check runs -----------------------------------------------------
class RemovesBeforeLookup(imgverify.Archive):
    """Deletes the given references just before the checker fetches them: the window between
    the index snapshot (and the sha256 look-up) and `references()`, made deterministic."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.doomed: list[str] = []

    def references(self, keys):  # type: ignore[no-untyped-def]
        if self.doomed:
            self.remove(self.doomed)
            self.doomed = []
        return super().references(keys)


def test_a_reference_removed_during_a_check_is_skipped(archive_copy: Path) -> None:
    image = _image_of(archive_copy, 3)
    with RemovesBeforeLookup(archive_copy) as arch:
        before = imgverify.check(image, arch)
        assert before.verdict == "likely_recycled" and before.top is not None
        assert before.top.exact_copy
        arch.doomed = [before.top.reference_id]
        after = imgverify.check(image, arch)
        assert after.error is None
        assert all(m.reference_id != before.top.reference_id for m in after.matches)
        assert after.verdict != "likely_recycled"
        assert arch.get(before.top.reference_id) is None
