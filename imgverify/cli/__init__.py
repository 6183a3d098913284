"""Command line: a thin skin over the library, one module per command group (check, scan,
hash, archive, serve). Results go to stdout, progress to stderr."""

from __future__ import annotations

import sys

import typer

from imgverify.cli import archive, check, hashes, hashing, scan  # noqa: F401 - registers
from imgverify.cli.common import EXIT_ARCHIVE, EXIT_BAD_INPUT, app, archive_app
from imgverify.cli.importing import import_app
from imgverify.cli.serve import serve_cmd
from imgverify.errors import ArchiveError, ImgVerifyError

app.command("serve")(serve_cmd)
archive_app.add_typer(import_app, name="import")


def _own_the_process() -> None:
    """The command line owns its process, which the library never touches: decoder warnings
    and the EXIF reader's log lines about malformed files are not the user's output (a bad
    input is reported as a typed error)."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("exifread").setLevel(logging.CRITICAL)


def run() -> None:
    """Console entry point: typed library errors become messages, never tracebacks."""
    _own_the_process()
    try:
        app()
    except ArchiveError as exc:
        typer.echo(f"imgverify: {exc.message}", err=True)
        sys.exit(EXIT_ARCHIVE)
    except ImgVerifyError as exc:
        typer.echo(f"imgverify: {exc.message}", err=True)
        sys.exit(EXIT_BAD_INPUT)


__all__ = ["app", "run"]
