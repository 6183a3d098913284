"""`imgverify hash`: PDQ and imagehash values as Meta's and imagehash's tools print them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from imgverify.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    MaxBytesOpt,
    MaxPixelsOpt,
    _fail,
    _limits,
    app,
)
from imgverify.media.load import Limits


@app.command("hash")
def hash_cmd(
    files: Annotated[list[str], typer.Argument(help="Image files (or URLs).")],
    algorithm: Annotated[str, typer.Option(help="Comma-separated: pdq,phash,dhash,whash.")
                         ] = "pdq,phash,dhash,whash",
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | text")] = "jsonl",
    fast: Annotated[bool, typer.Option(help="Hash the reduced, EXIF-oriented picture that "
                                       "matching uses, instead of Meta's reference pipeline "
                                       "(full resolution, stored orientation).")] = False,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
) -> None:
    """Print perceptual hashes, one JSON object per file. By default PDQ follows Meta's
    reference pipeline so the values can be exchanged with other PDQ tools."""
    from imgverify.signals.hashing import ALGORITHMS
    from imgverify.signals.hashprint import hash_file

    algos = [a.strip().lower() for a in algorithm.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown:
        _fail(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)}",
              EXIT_USAGE)
    limits = _limits(max_pixels, max_bytes)
    failed = 0
    for f in files:
        record = hash_file(f, algos, limits, fast=fast)
        if "error" in record:
            failed += 1
        if fmt == "text":
            typer.echo(" ".join(f"{k}={v}" for k, v in record.items()))
        else:
            typer.echo(json.dumps(record, ensure_ascii=False))
    raise typer.Exit(EXIT_BAD_INPUT if failed else EXIT_OK)
