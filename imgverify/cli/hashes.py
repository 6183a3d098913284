"""`imgverify archive import-hashes`: PDQ hash lists into hash-only references (a thin skin
over `hashlists`). Registered on the `archive` command group by importing this module."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from imgverify.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    ArchiveOpt,
    _fail,
    _open_archive,
    _typed_errors_exit,
    archive_app,
)
from imgverify.ingest.hashlists import FORMATS, import_hash_list

_Text = Optional[str]


def _opt(name: str, text: str) -> object:
    return typer.Option(f"--{name}", help=f"{text} for rows that do not give one.")


@archive_app.command("import-hashes")
def import_hashes(
    hash_list: Annotated[Path, typer.Argument(
        help="The hash list ('-' for standard input). pdq-lines: '<64 hex>[,quality[,label]]' "
             "per line; csv/jsonl: a manifest with a 'pdq' column instead of 'image'; te: "
             "python-threatexchange ('pdq <hex>' lines, `dataset -P [--csv]` output); hma: "
             "HMA bank content JSON "
             "({'pdq': hex} or {'signals': {'pdq': hex}, 'metadata': {...}}).")],
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help=" | ".join(FORMATS))] = "pdq-lines",
    archive: ArchiveOpt = None,
    date: Annotated[_Text, _opt("date", "Date (YYYY-MM-DD) of the event or first "
                                "publication, required")] = None,
    event: Annotated[_Text, _opt("event", "Event")] = None,
    place: Annotated[_Text, _opt("place", "Place")] = None,
    caption: Annotated[_Text, _opt("caption", "Caption")] = None,
    source: Annotated[_Text, _opt("source", "Source (e.g. the sharing programme)")] = None,
    source_url: Annotated[_Text, _opt("source-url", "Source URL")] = None,
    credit: Annotated[_Text, _opt("credit", "Credit")] = None,
    license_: Annotated[_Text, _opt("license", "Licence")] = None,
    published: Annotated[_Text, _opt("published", "First-publication date")] = None,
    batch_size: Annotated[int, typer.Option(help="References per transaction.")] = 500,
) -> None:
    """Import a PDQ hash list as hash-only references: matched by their PDQ alone (stricter
    thresholds), reported with their context and the note that no image was available for
    local verification. Re-importing updates in place. Bad rows are reported with their
    line numbers; good rows still go in."""
    if fmt not in FORMATS:
        _fail(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}", EXIT_USAGE)
    defaults = {k: v for k, v in (
        ("date", date), ("event", event), ("place", place), ("caption", caption),
        ("source", source), ("source_url", source_url), ("credit", credit),
        ("license", license_), ("published", published)) if v}
    # standard input is read whole: the te and hma readers look at the start, then rewind
    given: Path | io.StringIO = (io.StringIO(sys.stdin.read()) if str(hash_list) == "-"
                                 else hash_list)
    arch = _open_archive(archive, writable=True)
    with _typed_errors_exit():
        report = import_hash_list(arch, given, fmt, defaults, batch_size=batch_size)
    for err in report.errors:
        typer.echo(f"{hash_list}:{err.line}: {err.message}", err=True)
    for skip in report.skipped:
        typer.echo(f"{hash_list}:{skip.line}: {skip.message}", err=True)
    typer.echo(json.dumps({"archive": arch.location, **report.to_dict()}, ensure_ascii=False))
    raise typer.Exit(EXIT_BAD_INPUT if report.errors else EXIT_OK)
