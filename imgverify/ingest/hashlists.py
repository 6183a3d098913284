"""PDQ hash lists in and out: how industry hash-sharing programmes exchange pictures.

Hash-sharing programmes (Meta's ThreatExchange, HMA banks, NCMEC, StopNCII, GIFCT ...) share
hashes, not images. A hash from such a list becomes a *hash-only reference*: its PDQ and its
context (date required), no image, thumbnail or local features. It takes part in
global-hash matching with PDQ-only thresholds, and a match says that no image was
available for local verification.

Formats (`FORMATS`), as the tools that write them do, from reading their source
(facebook/ThreatExchange):
 * ``pdq-lines``: one PDQ (64 hex digits) per line, optionally followed by a quality (0-100)
   and a label, separated by commas or tabs: the hash lists of ``pdq/data/reg-test-input``
   (``haystack.txt``, ``needles.txt``), the Java and pure-Python hasher tools'
   ``<hex>,<quality>,<filename>`` and the C++ tool's ``<hex>,<filename>``. A label becomes
   the caption (unless one is given). Exported as ``<hex>,<quality>``.
 * ``csv`` / ``jsonl``: imgverify's own reference manifest with a ``pdq`` column (and
   optionally ``pdq_quality``) instead of ``image``; ``archive export --format csv|jsonl``
   writes it, so an archive's hashes and context move to another archive in one step.
 * ``te``: python-threatexchange (``cli/dataset_cmd.py``, ``exchanges/impl/file_api.py``;
   checked against the threatexchange 1.2 CLI itself). Reads ``threatexchange dataset -P``
   output (``<signal_type> <signal> 'collab' <CATEGORY>``; older releases put the quoted
   collaboration first), ``-S`` output and the local-file collaboration format
   (``<signal_type> <signal>`` per line, or bare signals), and ``dataset -P --csv`` (header
   with ``signal_type``, ``signal_str``, ``collab``, ``category``, ``tags``). Signal type
   ``pdq``; other types (``video_md5``, ``url`` ...) are skipped and listed. The
   collaboration becomes the source, category and tags the caption. Exported in the
   local-file format, ``pdq <hex>`` per line, which ``threatexchange config collab edit
   local_file`` takes as a collaboration.
 * ``hma``: hasher-matcher-actioner (OpenMediaMatch ``blueprints/curation.py``). One JSON
   object per line (or one JSON array): the body of ``POST /c/bank/{bank}/signal``
   (``{"pdq": "<hex>"}``), a bank content record (``GET /c/bank/{bank}/content/{id}
   ?include_signals=true``: ``id``, ``bank``, ``signals``, ``original_media_uri``) or
   ``{"signals": {...}, "metadata": {"content_id", "content_uri", "json": {...}}}`` as
   ``POST /c/bank/{bank}/content`` takes metadata. Our context travels in
   ``metadata.json``; the bank name becomes the source, a content URI the source URL.
   Exported in that last shape.

A bad row is reported with its line number (item number in a JSON array) and never stops
the others; re-importing a list updates references in place (keyed by the PDQ).
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

from imgverify.errors import ManifestError
from imgverify.media.fetch import is_url
from imgverify.store.manifest import CONTEXT_FIELDS, MAX_FIELD_CHARS, RowError, parse_date
from imgverify.store.sqlite import HashImportReport, HashOnlyReference

FORMATS = ("pdq-lines", "csv", "jsonl", "te", "hma")
EXPORT_FORMATS = ("pdq-lines", "te", "hma")
#: Stored when a list gives no quality. Lists carry only hashes their producers matched on:
#: python-threatexchange's PdqSignal gives no hash at all below quality 50.
UNKNOWN_QUALITY = -1
#: Meta's floor (PdqSignal.QUALITY_THRESHOLD): "Images with less than quality 50 are too
#: unreliable to match on".
MIN_QUALITY = 50
#: python-threatexchange signal type names (SignalType.get_name()); only pdq is imported.
TE_SIGNAL_TYPES = frozenset({"pdq", "pdq_ocr", "photo_md5", "video_md5", "video_tmk_pdqf",
                             "vpdq", "url", "url_md5", "raw_text", "trend_query", "text"})
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass
class SkippedRow(RowError):
    """A row of another signal type: not an error, but listed so nothing vanishes silently."""


Item = HashOnlyReference | RowError


def parse_pdq(text: str) -> int:
    """A PDQ from its 64 hex digits (Meta's encoding, most significant digit first)."""
    value = text.strip()
    if not _HEX64.match(value):
        raise ValueError(f"{_short(value)} is not a PDQ hash (64 hex digits)")
    pdq = int(value, 16)
    if pdq == 0 or pdq == (1 << 256) - 1:
        raise ValueError("degenerate PDQ hash (all bits equal): the hash of a flat picture")
    return pdq


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


def _quality(value: object) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return UNKNOWN_QUALITY
    try:
        q = int(str(value).strip())
    except ValueError:
        raise ValueError(f"quality {_short(value)} is not a whole number") from None
    if q == UNKNOWN_QUALITY:
        return q
    if not 0 <= q <= 100:
        raise ValueError(f"quality {q} is outside 0-100")
    if q < MIN_QUALITY:
        raise ValueError(f"quality {q} is below {MIN_QUALITY}: PDQ is too unreliable there to "
                         "match on (the picture is nearly flat)")
    return q


def _context(raw: dict[str, Any], defaults: dict[str, str]) -> dict[str, str | None]:
    """Validated context: the row's own values, else the defaults; date required."""
    clean: dict[str, str | None] = {}
    for k in CONTEXT_FIELDS:
        value = raw.get(k)
        if value is None or (isinstance(value, str) and not value.strip()):
            value = defaults.get(k)
        if value is None or (isinstance(value, str) and not value.strip()):
            clean[k] = None
            continue
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"field {k!r} must be text, not {type(value).__name__}")
        text = str(value).strip()
        if len(text) > MAX_FIELD_CHARS:
            raise ValueError(f"field {k!r} is longer than {MAX_FIELD_CHARS} characters")
        clean[k] = text
    if not clean["date"]:
        raise ValueError("missing required field 'date' (give it in the list or with --date)")
    clean["date"] = parse_date(str(clean["date"]))
    if clean.get("published"):
        clean["published"] = parse_date(str(clean["published"]))
    if clean.get("source_url") and not is_url(str(clean["source_url"])):
        raise ValueError("source_url must be an http(s) URL")
    return clean


def _item(line: int, pdq: object, quality: object, raw: dict[str, Any],
          defaults: dict[str, str]) -> Item:
    try:
        if not isinstance(pdq, str):
            raise ValueError("missing PDQ hash" if pdq is None else
                             f"PDQ must be text, not {type(pdq).__name__}")
        return HashOnlyReference(pdq=parse_pdq(pdq), pdq_quality=_quality(quality),
                                 context=_context(raw, defaults), line=line)
    except ValueError as exc:
        return RowError(line, str(exc), pdq if isinstance(pdq, str) else None)


# -- readers ----------------------------------------------------------------------------------
def _lines(fh: TextIO) -> Iterator[tuple[int, str]]:
    for lineno, line in enumerate(fh, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield lineno, text


def _read_pdq_lines(fh: TextIO, defaults: dict[str, str]) -> Iterator[Item]:
    for lineno, text in _lines(fh):
        parts = [p.strip() for p in re.split(r"[,\t]", text)] if re.search(r"[,\t]", text) \
            else text.split(None, 1)
        if lineno == 1 and not any(_HEX64.match(p) for p in re.split(r"[\s,]+", text)):
            continue  # a header line (e.g. "hash,quality,file")
        if parts[0].lower() in TE_SIGNAL_TYPES:
            yield RowError(lineno, f"{_short(parts[0])} is a signal type, not a PDQ hash: "
                           "for python-threatexchange lists use the te format", _short(text))
            continue
        quality: str | None = None
        rest = parts[1:]
        if rest and re.fullmatch(r"-?\d{1,3}", rest[0]):
            quality, rest = rest[0], rest[1:]
        raw: dict[str, Any] = {}
        label = " ".join(r for r in rest if r)
        if label and not defaults.get("caption"):
            raw["caption"] = label
        yield _item(lineno, parts[0], quality, raw, defaults)


def _read_records(fh: TextIO, defaults: dict[str, str], csv_format: bool) -> Iterator[Item]:
    """Our manifest with a pdq column: CSV with a header, or JSON lines."""
    if csv_format:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in reader.fieldnames or [] if h]
        if not header:
            raise ManifestError("empty file: expected a CSV header with pdq,date,...")
        if "pdq" not in header:
            raise ManifestError("the CSV header lacks the required column 'pdq'")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RowError(reader.line_num, f"malformed CSV: {exc}")
                return
            if None in row:
                yield RowError(reader.line_num, "row has more fields than the header")
                continue
            clean = {str(k).strip().lower(): v for k, v in row.items()}
            yield _item(reader.line_num, clean.get("pdq"),
                        clean.get("pdq_quality", clean.get("quality")), clean, defaults)
        return
    for lineno, obj in _json_objects(fh):
        if isinstance(obj, RowError):
            yield obj
            continue
        clean = {str(k).strip().lower(): v for k, v in obj.items()}
        yield _item(lineno, clean.get("pdq"), clean.get("pdq_quality", clean.get("quality")),
                    clean, defaults)


def _json_objects(fh: TextIO) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(line number, object) per JSON line, or (item number, object) of one JSON array."""
    first = fh.read(1)
    while first and first.isspace():
        first = fh.read(1)
    fh.seek(0)
    numbered: Iterable[tuple[int, Any]]
    if first == "[":  # one JSON array (a saved API answer): read whole, numbered by item
        try:
            items = json.load(fh)
        except json.JSONDecodeError as exc:
            yield exc.lineno, RowError(exc.lineno, f"invalid JSON: {exc.msg}")
            return
        numbered = enumerate(items, start=1)
    else:  # JSON lines: streamed
        numbered = _decoded((n, line) for n, line in enumerate(fh, start=1) if line.strip())
    for n, obj in numbered:
        if isinstance(obj, RowError):
            yield n, obj
        elif not isinstance(obj, dict):
            yield n, RowError(n, "each item must be a JSON object")
        else:
            yield n, obj


def _decoded(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    for n, line in lines:
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, RowError(n, f"invalid JSON: {exc.msg}")


_QUOTED = re.compile(r"""^('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s+(.*)$""")


def _quoted(text: str) -> tuple[str | None, str]:
    """(name, rest) when `text` starts with a repr()-quoted name, else (None, text)."""
    m = _QUOTED.match(text + " ")
    if m is None:
        return None, text
    try:
        return str(ast.literal_eval(m.group(1))), m.group(2).strip()
    except (ValueError, SyntaxError):
        return None, text


def _te_line(text: str) -> tuple[str | None, str, str, str | None] | None:
    """(collab, signal type, signal, category) of one `threatexchange dataset -P` line, in
    either order the CLI has printed it (``'collab' <type> <signal> <metadata>`` in older
    releases, ``<type> <signal> 'collab' <CATEGORY>`` in 1.2), of a ``-S`` or local-file line
    (``<type> <signal>``), or of a bare PDQ; None when it is none of these."""
    collab, text = _quoted(text)
    words = text.split(None, 2)
    if words and _HEX64.match(words[0]):
        stype, signal, rest = "pdq", words[0], " ".join(words[1:])
    elif len(words) >= 2 and words[0] in TE_SIGNAL_TYPES:
        stype, signal, rest = words[0], words[1], (words[2] if len(words) > 2 else "")
    else:
        return None
    trailing, rest = _quoted(rest.strip())
    collab = collab or trailing
    first = rest.split()[0] if rest.split() else ""
    category = first if re.fullmatch(r"[A-Z][A-Z_]+", first) else None
    return collab, stype, signal, category


def _read_te(fh: TextIO, defaults: dict[str, str]) -> Iterator[Item]:
    first = fh.readline()
    fh.seek(0)
    head = [h.strip().lower() for h in next(csv.reader([first]), [])]
    if "signal_type" in head and "signal_str" in head:
        yield from _read_te_csv(fh, defaults)
        return
    for lineno, text in _lines(fh):
        parsed = _te_line(text)
        if parsed is None:
            yield RowError(lineno, "expected '<signal_type> <signal>' (as threatexchange "
                           "prints it) or a PDQ hash", _short(text))
            continue
        collab, stype, signal, category = parsed
        if stype != "pdq":
            yield SkippedRow(lineno, f"signal type {stype!r} is not a photo PDQ: skipped")
            continue
        raw: dict[str, Any] = {}
        if collab and not defaults.get("source"):
            raw["source"] = collab
        if category and not defaults.get("caption"):
            raw["caption"] = f"ThreatExchange: {category}"
        yield _item(lineno, signal, None, raw, defaults)


def _read_te_csv(fh: TextIO, defaults: dict[str, str]) -> Iterator[Item]:
    reader = csv.DictReader(fh)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(reader.line_num, f"malformed CSV: {exc}")
            return
        clean = {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k}
        stype = clean.get("signal_type", "")
        if stype != "pdq":
            yield SkippedRow(reader.line_num,
                             f"signal type {stype!r} is not a photo PDQ: skipped")
            continue
        raw: dict[str, Any] = {}
        if clean.get("collab") and not defaults.get("source"):
            raw["source"] = clean["collab"]
        labels = " ".join(x for x in (clean.get("category"), clean.get("tags")) if x)
        if labels and not defaults.get("caption"):
            raw["caption"] = f"ThreatExchange: {labels}"
        yield _item(reader.line_num, clean.get("signal_str"), None, raw, defaults)


def _read_hma(fh: TextIO, defaults: dict[str, str]) -> Iterator[Item]:
    for n, obj in _json_objects(fh):
        if isinstance(obj, RowError):
            yield obj
            continue
        signals = obj.get("signals", obj)
        if not isinstance(signals, dict):
            yield RowError(n, "'signals' must be a JSON object of signal type -> hash")
            continue
        if "pdq" not in signals:
            kinds = ", ".join(sorted(str(k) for k in signals)) or "none"
            yield SkippedRow(n, f"no pdq signal (signal types: {_short(kinds)}): skipped")
            continue
        meta_value, ctx_value = obj.get("metadata"), None
        meta: dict[str, Any] = meta_value if isinstance(meta_value, dict) else {}
        ctx_value = meta.get("json")
        ctx: dict[str, Any] = ctx_value if isinstance(ctx_value, dict) else {}
        raw: dict[str, Any] = {str(k).lower(): v for k, v in ctx.items()}
        uri = meta.get("content_uri") or obj.get("original_media_uri")
        if isinstance(uri, str) and is_url(uri) and not raw.get("source_url"):
            raw["source_url"] = uri
        bank = obj.get("bank")
        bank_name = bank.get("name") if isinstance(bank, dict) else bank
        if isinstance(bank_name, str) and not raw.get("source") and not defaults.get("source"):
            raw["source"] = bank_name
        yield _item(n, signals.get("pdq"), raw.get("pdq_quality"), raw, defaults)


def read_hash_list(source: str | os.PathLike[str] | TextIO, fmt: str,
                   defaults: dict[str, str] | None = None) -> Iterator[Item]:
    """Hash-only references (and row errors, and `SkippedRow`s) of a hash list, streaming.

    `source` is a path or a seekable text stream (e.g. ``io.StringIO`` of standard input).
    `defaults` fill the context fields a row does not give (``date`` is required: lists
    without dates need a default date). Raises ManifestError when the file cannot be read at
    all or `fmt` is unknown.
    """
    if fmt not in FORMATS:
        raise ManifestError(f"unknown hash list format {fmt!r}: use one of {', '.join(FORMATS)}")
    defaults = {k: v for k, v in (defaults or {}).items() if v is not None and k in CONTEXT_FIELDS}
    if hasattr(source, "read"):
        yield from _read(cast(TextIO, source), fmt, defaults)
        return
    path = Path(cast("str | os.PathLike[str]", source))
    try:
        fh = path.open("r", encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise ManifestError(f"cannot open hash list {path}: {exc.strerror or exc}") from None
    with fh:
        yield from _read(fh, fmt, defaults)


def _read(fh: TextIO, fmt: str, defaults: dict[str, str]) -> Iterator[Item]:
    if fmt == "pdq-lines":
        yield from _read_pdq_lines(fh, defaults)
    elif fmt in ("csv", "jsonl"):
        yield from _read_records(fh, defaults, csv_format=fmt == "csv")
    elif fmt == "te":
        yield from _read_te(fh, defaults)
    else:
        yield from _read_hma(fh, defaults)


def import_hash_list(archive: Any, path: str | os.PathLike[str] | TextIO, fmt: str,
                     defaults: dict[str, str] | None = None,
                     batch_size: int = 500) -> HashImportReport:
    """Import every good row of a hash list as hash-only references (`archive.write_hashes`,
    one transaction per batch); bad rows come back with their line numbers."""
    report = HashImportReport()
    batch: list[HashOnlyReference] = []

    def flush() -> None:
        a, u, same = archive.write_hashes(batch)
        report.added += a
        report.updated += u
        report.unchanged += same
        batch.clear()

    for item in read_hash_list(path, fmt, defaults):
        if isinstance(item, SkippedRow):
            report.skipped.append(item)
        elif isinstance(item, RowError):
            report.errors.append(item)
        else:
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
    if batch:
        flush()
    return report


# -- writers ----------------------------------------------------------------------------------
def write_hash_list(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> tuple[int, int]:
    """Write exported references (`ArchiveStore.export()` rows) as a hash list; returns
    (written, left out). Hashes below quality 50 are left out, as Meta's tools never emit
    them and importers (ours too) refuse them."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown hash list format {fmt!r}: use one of "
                         f"{', '.join(EXPORT_FORMATS)}")
    written = left_out = 0
    for row in rows:
        pdq, quality = row.get("pdq"), row.get("pdq_quality")
        if not pdq:
            left_out += 1
            continue
        known = isinstance(quality, int) and quality >= 0
        if known and quality < MIN_QUALITY:  # type: ignore[operator]
            left_out += 1
            continue
        if fmt == "pdq-lines":
            out.write(f"{pdq},{quality}\n" if known else f"{pdq}\n")
        elif fmt == "te":
            out.write(f"pdq {pdq}\n")
        else:
            context = {k: row.get(k) for k in CONTEXT_FIELDS if row.get(k) is not None}
            if known:
                context["pdq_quality"] = quality
            meta: dict[str, Any] = {"content_id": row.get("reference_id"), "json": context}
            if row.get("source_url"):
                meta["content_uri"] = row["source_url"]
            out.write(json.dumps({"signals": {"pdq": pdq}, "metadata": meta},
                                 ensure_ascii=False) + "\n")
        written += 1
    return written, left_out


__all__ = ["FORMATS", "EXPORT_FORMATS", "MIN_QUALITY", "UNKNOWN_QUALITY", "SkippedRow",
           "parse_pdq", "read_hash_list", "import_hash_list", "write_hash_list"]
