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

from .errors import ManifestError
from .fetch import is_url

REQUIRED = ("image", "date")
OPTIONAL = ("event", "place", "caption", "source", "source_url", "credit", "license", "published")
CONTEXT_FIELDS = ("date",) + OPTIONAL
MAX_FIELD_CHARS = 20_000


@dataclass
class ManifestRow:
    line: int
    image: str  # absolute path or URL
    context: dict[str, str | None] = field(default_factory=dict)


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
        raise ValueError(f"date {value!r} is not an ISO date (YYYY-MM-DD)") from None


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
    return ManifestRow(line, location, context)


def read_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestRow | RowError]:
    """Yield validated rows (and row errors) of a CSV or JSONL manifest, streaming."""
    path = Path(path)
    base = path.parent
    try:
        fh = path.open("r", encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise ManifestError(f"cannot open manifest {path}: {exc.strerror or exc}") from None
    with fh:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            yield from _read_jsonl(fh, base)
        else:
            yield from _read_csv(fh, base, path)


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


def _read_csv(fh: io.TextIOBase, base: Path, path: Path) -> Iterator[ManifestRow | RowError]:
    try:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read CSV header: {exc}") from None
    if not header:
        raise ManifestError(f"{path} is empty: expected a CSV header with image,date,...")
    names = {h.strip().lower() for h in header if h}
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ManifestError(f"{path}: CSV header lacks required column(s) {', '.join(missing)}")
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
            yield RowError(reader.line_num, f"malformed CSV: {exc}")
            continue
        yield _validate(reader.line_num, dict(row), base)
