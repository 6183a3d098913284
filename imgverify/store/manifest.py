"""Reference manifests (CSV with a header, or JSONL): parsing and per-row validation.

A bad row never stops the others: it comes back as a `RowError` with its line number.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imgverify.errors import ManifestError
from imgverify.media.fetch import is_url

REQUIRED = ("image", "date")
OPTIONAL = ("event", "place", "caption", "source", "source_url", "credit", "license", "published")
CONTEXT_FIELDS = ("date",) + OPTIONAL
MAX_FIELD_CHARS = 20_000


@dataclass
class ManifestRow:
    line: int
    image: str  # absolute path or URL
    context: dict[str, str | None] = field(default_factory=dict)
    #: the image as the user would name it: the manifest's own path (not symlinks resolved)
    #: joined with the row's text, for messages
    shown: str | None = None


@dataclass
class RowError:
    line: int
    message: str
    image: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "image": self.image, "error": self.message}


def parse_date(value: str) -> str:
    """Normalise an ISO date (YYYY-MM-DD, or a full ISO timestamp) to YYYY-MM-DD."""
    text = value.strip()
    try:
        return dt.date.fromisoformat(text[:10]).isoformat() if len(text) >= 10 else \
            dt.date.fromisoformat(text).isoformat()
    except ValueError:
        from imgverify.dates import date_problem

        raise ValueError(f"date {value!r} {date_problem(value)}") from None


def _validate(line: int, raw: dict[str, object], base: Path) -> ManifestRow | RowError:
    clean: dict[str, str | None] = {}
    for key, value in raw.items():
        if key is None:
            return RowError(line, "row has more fields than the header")
        k = str(key).strip().lower()
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, (str, int, float)):
            return RowError(line, f"field {k!r} must be text, not {type(value).__name__}")
        text = str(value).strip()
        if len(text) > MAX_FIELD_CHARS:
            return RowError(line, f"field {k!r} is longer than {MAX_FIELD_CHARS} characters")
        clean[k] = text
    image = clean.get("image")
    if not image:
        return RowError(line, "missing required field 'image'")
    if not clean.get("date"):
        return RowError(line, "missing required field 'date'", image)
    try:
        clean["date"] = parse_date(str(clean["date"]))
        if clean.get("published"):
            clean["published"] = parse_date(str(clean["published"]))
    except ValueError as exc:
        return RowError(line, str(exc), image)
    if clean.get("source_url") and not is_url(str(clean["source_url"])):
        return RowError(line, "source_url must be an http(s) URL", image)
    location = image if is_url(image) else str((base / image).resolve())
    context = {k: clean.get(k) for k in CONTEXT_FIELDS}
    return ManifestRow(line, location, context, image if is_url(image) else str(base / image))


def read_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestRow | RowError]:
    """Yield validated rows (and row errors) of a CSV or JSONL manifest, streaming."""
    path = Path(path)
    base = path.parent
    try:
        fh = path.open("r", encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise ManifestError(f"cannot open manifest {path}: {exc.strerror or exc}") from None
    with fh:
        if _is_jsonl(path, fh):
            yield from _read_jsonl(fh, base)
        else:
            yield from _read_csv(fh, base, path)


JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def _is_jsonl(path: Path, fh: io.TextIOBase) -> bool:
    """JSONL by its suffix, or by its content (a line-per-object file named .txt or .csv)."""
    if path.suffix.lower() in JSONL_SUFFIXES:
        return True
    start = fh.tell()
    head = fh.read(4096)
    fh.seek(start)
    return head.lstrip().startswith("{")


@dataclass
class ManifestInfo:
    """What a manifest looks like, found before anything is written: its kind, the CSV
    separator, the columns (or JSON keys) found and those imgverify does not know."""

    kind: str  # "csv" | "jsonl"
    columns: list[str]
    delimiter: str | None = None
    #: unknown column or key -> first line it appears on
    unknown: dict[str, int] = field(default_factory=dict)

    def unknown_warning(self, shown: str) -> str | None:
        if not self.unknown:
            return None
        what = "column(s)" if self.kind == "csv" else "key(s)"
        names = ", ".join(repr(k) if self.kind == "csv" else f"{k!r} (line {n})"
                          for k, n in self.unknown.items())
        return (f"{shown}: unknown {what} {names} ignored; known: "
                f"{', '.join(REQUIRED + OPTIONAL)}")


def inspect_manifest(path: str | os.PathLike[str]) -> ManifestInfo:
    """Check the shape of a manifest as a whole (opens, has the required columns) before an
    archive is created or written: a wrong header is one clear error, not one per row and an
    empty archive left behind. JSONL has no header, so its keys are read from every line."""
    path = Path(path)
    try:
        fh = path.open("r", encoding="utf-8-sig", errors="replace", newline="")
    except IsADirectoryError:
        raise ManifestError(f"manifest {path} is a folder, not a CSV or JSONL file") from None
    except OSError as exc:
        raise ManifestError(f"cannot open manifest {path}: {exc.strerror or exc}") from None
    with fh:
        if not _is_jsonl(path, fh):
            header, delimiter = _read_header(fh, path)
            names = [h.strip().lower() for h in header if h]
            return ManifestInfo("csv", names, delimiter,
                                {n: 1 for n in names if n not in REQUIRED + OPTIONAL})
        keys: dict[str, int] = {}
        objects = complete = 0
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            objects += 1
            found = [str(k).strip().lower() for k in obj]
            complete += all(c in found for c in REQUIRED)
            for k in found:
                keys.setdefault(k, lineno)
    if not objects:
        raise ManifestError(f"{path} holds no JSON object lines: expected one object per line "
                            "with keys image, date, ...")
    if not complete:
        raise ManifestError(f"{path}: no line has the required keys {', '.join(REQUIRED)}; keys "
                            f"found: {', '.join(keys)}")
    return ManifestInfo("jsonl", list(keys), None,
                        {k: n for k, n in keys.items() if k not in REQUIRED + OPTIONAL})


def _read_jsonl(fh: io.TextIOBase, base: Path) -> Iterator[ManifestRow | RowError]:
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RowError(lineno, f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield RowError(lineno, "each line must be a JSON object")
            continue
        yield _validate(lineno, obj, base)


def _read_header(fh: io.TextIOBase, path: Path) -> tuple[list[str], str]:
    """The CSV header and its separator (",", or ";" or tab as spreadsheets in many locales
    write them), or a ManifestError naming the columns found."""
    try:
        first = fh.readline()
    except UnicodeDecodeError as exc:  # pragma: no cover - opened with errors="replace"
        raise ManifestError(f"{path}: cannot read CSV header: {exc}") from None
    if not first.strip():
        raise ManifestError(f"{path} is empty: expected a CSV header with image,date,...")
    candidates = []
    for delimiter in (",", ";", "\t"):
        try:
            header = next(csv.reader([first], delimiter=delimiter))
        except csv.Error as exc:
            raise ManifestError(f"{path}: cannot read CSV header: {exc}") from None
        names = {h.strip().lower() for h in header if h}
        if all(c in names for c in REQUIRED):
            return header, delimiter
        candidates.append((sum(c in names for c in REQUIRED), len(header), delimiter, header))
    *_, delimiter, header = max(candidates, key=lambda c: (c[0], c[1]))
    found = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in {n.lower() for n in found}]
    sep = {",": "','", ";": "';'", "\t": "tab"}[delimiter]
    raise ManifestError(
        f"{path}: the CSV header lacks the required column(s) {', '.join(missing)}; columns "
        f"found (separator {sep}): {', '.join(repr(n) for n in found)}. Expected "
        f"{', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}")


def _read_csv(fh: io.TextIOBase, base: Path, path: Path) -> Iterator[ManifestRow | RowError]:
    header, delimiter = _read_header(fh, path)
    reader = csv.DictReader(fh, fieldnames=header, delimiter=delimiter)
    last_error_line = -1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if reader.line_num == last_error_line:
                return  # the reader cannot move past this point
            last_error_line = reader.line_num
            yield RowError(reader.line_num + 1, f"malformed CSV: {exc}")
            continue
        yield _validate(reader.line_num + 1, dict(row), base)  # + 1: the header line
