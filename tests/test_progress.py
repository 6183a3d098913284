"""Long commands show a progress bar (count, rate, ETA) on a terminal, and only there."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import coco, manifest_rows, needs_shared, write_manifest

pytestmark = needs_shared


def _run_on_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; returns (exit code, stdout, terminal)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "140", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "imgverify", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=120), out, seen.decode("utf-8", "replace")


def test_archive_add_and_scan_show_a_bar_on_a_terminal(tmp_path: Path) -> None:
    photos = coco(6, start=60)
    folder = tmp_path / "in"
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / p.name)
    manifest = write_manifest(tmp_path / "m.csv", manifest_rows(photos))
    archive = tmp_path / "a.sqlite"
    root = Path(__file__).resolve().parents[1]
    code, out, term = _run_on_terminal(["archive", "add", str(manifest), "--archive",
                                        str(archive), "--workers", "1"], root)
    assert code == 0, term
    assert json.loads(out)["added"] == 6  # stdout stays machine-readable
    assert "ingesting" in term and "6/6" in term and "img/s" in term and "ETA" in term, term
    code, out, term = _run_on_terminal(["scan", str(folder), "--archive", str(archive),
                                        "--workers", "1", "--out", str(tmp_path / "r.jsonl")],
                                       root)
    assert code == 0, term
    assert "scanning" in term and "6/6" in term, term
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(x)["verdict"] for x in lines] == ["likely_recycled"] * 6
    # --no-progress: no bar, on a terminal or not (elsewhere progress is plain lines, see
    # test_cli_safety.py)
    code, _out, term = _run_on_terminal(["scan", str(folder), "--archive", str(archive),
                                         "--workers", "1", "--no-progress"], root)
    assert code == 0 and "scanning" not in term, term
    res = subprocess.run([sys.executable, "-m", "imgverify", "archive", "rehash", "--archive",
                          str(archive), "--no-progress"], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "rehashing" not in res.stderr, res.stderr
    assert json.loads(res.stdout)["from_source"] == 6
    code, out, term = _run_on_terminal(["archive", "rehash", "--archive", str(archive)], root)
    assert code == 0 and "rehashing" in term and "6/6" in term, term
    assert json.loads(out)["from_source"] == 6
