"""Run a command that really cannot write where file modes forbid it, even when the tests run
as root (CI does, and root's capabilities bypass every chmod).

Switching to `nobody` is not enough on its own: the interpreter often lives under a private
home (/root/.pyenv, mode 0700) that nobody cannot even execute. Instead the child keeps uid 0
but loses the capabilities that override file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
CAP_FOWNER) from its bounding set before exec, so the kernel checks the owner bits like for
any user: a root-owned 0555 folder and 0444 file are then read-only for it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

_PR_CAPBSET_DROP = 24
_FILE_MODE_OVERRIDES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _dropper() -> Callable[[], None] | None:
    if os.geteuid() != 0:
        return None  # an ordinary user: file modes already apply
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:  # runs in the child between fork and exec
        for cap in _FILE_MODE_OVERRIDES:
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return drop


def run_without_override(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(cmd)` in a child that file modes bind, as root or not."""
    return subprocess.run(list(cmd), preexec_fn=_dropper(), capture_output=True, text=True,
                          **kwargs)


def make_read_only(folder: Path) -> None:
    """Files 0444 and folders 0555 from `folder` down."""
    for path in sorted(folder.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    folder.chmod(0o555)


def make_writable(folder: Path) -> None:
    """Undo `make_read_only` so pytest can delete its temporary folders."""
    folder.chmod(0o755)
    for path in sorted(folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def assert_really_read_only(folder: Path) -> None:
    """Fail (or skip where the capability cannot be dropped) unless a child really cannot
    write in `folder`: otherwise a read-only test would pass without testing anything."""
    try:
        probe = run_without_override(["sh", "-c", f"touch '{folder}/probe'"], timeout=30)
    except subprocess.SubprocessError as exc:  # prctl refused: no CAP_SETPCAP here
        pytest.skip(f"cannot drop the file-mode capabilities here: {exc}")
    assert probe.returncode != 0, "the child could still write in a read-only folder"
    assert not (folder / "probe").exists()
