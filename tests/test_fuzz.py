"""Property-based fuzzing (hypothesis) of the loader, the EXIF reader, the manifest parser and
the result serialisers. Bounded: a few hundred examples each, so CI stays fast. Any crash
hypothesis finds becomes a named regression case below."""

from __future__ import annotations

import io
import json
import os  # noqa: E402
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgverify.errors import InputError
from imgverify.match.result import CheckResult, Match
from imgverify.media.evidence import read_exif
from imgverify.media.load import Limits, decode
from imgverify.report.render import to_html, to_json, to_text
from imgverify.store.manifest import ManifestRow, RowError, read_manifest

#: CI runs a bounded number of examples; IMGVERIFY_FUZZ_EXAMPLES=5000 for a long session
FUZZ = settings(max_examples=int(os.environ.get("IMGVERIFY_FUZZ_EXAMPLES", "200")),
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LIMITS = Limits(max_pixels=4_000_000)


def _seed_images() -> list[bytes]:
    im = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    out = []
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        im.save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 12))):
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        if not data:
            break
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), mutated_images()))
def test_decode_never_raises_untyped(data: bytes) -> None:
    try:
        rgb, size, _fmt = decode(data, "fuzz", LIMITS)
    except InputError:
        return
    assert rgb.mode == "RGB" and rgb.width > 0 and rgb.height > 0
    assert size[0] * size[1] <= LIMITS.max_pixels


@st.composite
def exif_segments(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 6))
    entries = b"".join(struct.pack("<HHII", draw(st.integers(0, 0xFFFF)),
                                   draw(st.integers(0, 13)), draw(st.integers(0, 2**32 - 1)),
                                   draw(st.integers(0, 2**32 - 1))) for _ in range(n))
    tiff = (b"II*\x00" + struct.pack("<I", draw(st.integers(0, 64))) + struct.pack("<H", n)
            + entries + struct.pack("<I", draw(st.integers(0, 2**32 - 1)))
            + draw(st.binary(max_size=64)))
    payload = b"Exif\x00\x00" + tiff
    return (b"\xff\xd8\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
            + SEEDS[0][2:])


@FUZZ
@given(st.one_of(exif_segments(), st.binary(max_size=512)))
def test_exif_reader_never_raises(data: bytes) -> None:
    ev = read_exif(data)
    json.dumps(ev.to_dict())


@FUZZ
@given(st.text(max_size=600), st.sampled_from(["m.csv", "m.jsonl"]))
def test_manifest_parser_reports_rows_never_crashes(tmp_path_factory: object, text: str,
                                                    name: str) -> None:
    folder = Path(str(tmp_path_factory.mktemp("fuzz")))  # type: ignore[attr-defined]
    path = folder / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    from imgverify.errors import ManifestError

    try:
        items = list(read_manifest(path))
    except ManifestError:
        return
    for item in items:
        assert isinstance(item, (ManifestRow, RowError))
        if isinstance(item, RowError):
            assert item.line >= 1 and item.message


printable = st.text(max_size=200).map(lambda t: f"QZX{t}XZQ")  # markers make it findable


@FUZZ
@given(printable, printable, printable, st.one_of(st.none(), st.text(max_size=80)))
def test_serialisers_escape_everything(event: str, caption: str, name: str,
                                       url: str | None) -> None:
    m = Match(reference_id="r1", score=0.9, strength="likely", date="2020-01-01", event=event,
              caption=caption, source_url=url, place=name, region=(0.1, 0.1, 0.9, 0.9))
    r = CheckResult(input=name, verdict="likely_recycled", matches=[m], notes=[caption],
                    claim_checks=[{"check": "date", "finding": event, "strength": "strong",
                                   "supports": "recycled"}],
                    timeline=[{"date": "2020-01-01", "what": caption, "kind": "reference",
                               "source": event}])
    assert json.loads(to_json(r))["matches"][0]["event"] == event
    to_text(r)
    page = to_html(r, None, {})
    for hostile in (event, caption, name):
        if any(c in hostile for c in "<>&'\""):
            assert hostile not in page  # raw markup never reaches the page
    if url and not url.lower().startswith(("http://", "https://")):
        assert "href='" + url not in page


def test_regression_cases() -> None:
    """Inputs that once needed care: kept here so they stay handled."""
    # a PNG whose IHDR claims 0 x 0 (Pillow rejects it at open)
    zero = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 8 + b"\x08\x00\x00\x00\x00"
            + b"\x00" * 4)
    try:
        decode(zero, "zero.png", LIMITS)
    except InputError as exc:
        assert exc.kind in ("not_an_image", "corrupt_image")
