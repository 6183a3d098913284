"""EXIF evidence read once from the original bytes with exifread.

Metadata is evidence, not proof: social networks strip it routinely, so its absence is
reported as normal. Malformed EXIF never stops a check; it yields an empty record and a note.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

_DATE_RE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


@dataclass
class ExifEvidence:
    datetime_original: str | None = None  # ISO 8601, as recorded by the camera (no zone)
    camera: str | None = None
    software: str | None = None
    gps: dict[str, float] | None = None  # {"lat": .., "lon": ..}
    description: str | None = None  # caption embedded in the file (ImageDescription)
    readable: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("readable")
        return d

    @property
    def capture_date(self) -> dt.date | None:
        if not self.datetime_original:
            return None
        try:
            return dt.date.fromisoformat(self.datetime_original[:10])
        except ValueError:
            return None

    @property
    def empty(self) -> bool:
        return not any((self.datetime_original, self.camera, self.software, self.gps,
                        self.description))


def _text(tags: dict[str, Any], key: str, limit: int = 200) -> str | None:
    tag = tags.get(key)
    if tag is None:
        return None
    try:
        value = str(tag.printable if hasattr(tag, "printable") else tag)
    except Exception:  # noqa: BLE001
        return None
    value = value.replace("\x00", "").strip()
    return value[:limit] or None


def _parse_datetime(value: str | None) -> str | None:
    if not value:
        return None
    m = _DATE_RE.match(value.strip())
    if not m:
        return None
    try:
        y, mo, d, hh, mm, ss = (int(g) for g in m.groups())
        parsed = dt.datetime(y, mo, d, hh, mm, ss)
    except ValueError:  # 0000:00:00 00:00:00 and other impossible dates
        return None
    if parsed.year < 1826:  # before photography: a placeholder, not a date
        return None
    return parsed.isoformat()


def _ratio(v: Any) -> float:
    num = getattr(v, "num", None)
    den = getattr(v, "den", None)
    if num is not None and den is not None:
        return float(num) / float(den) if den else float("nan")
    return float(v)


def _gps(tags: dict[str, Any]) -> dict[str, float] | None:
    try:
        lat_t = tags.get("GPS GPSLatitude")
        lon_t = tags.get("GPS GPSLongitude")
        if lat_t is None or lon_t is None:
            return None
        lat_v = [_ratio(x) for x in lat_t.values][:3]
        lon_v = [_ratio(x) for x in lon_t.values][:3]
        if len(lat_v) < 3 or len(lon_v) < 3:
            return None
        lat = lat_v[0] + lat_v[1] / 60 + lat_v[2] / 3600
        lon = lon_v[0] + lon_v[1] / 60 + lon_v[2] / 3600
        if _text(tags, "GPS GPSLatitudeRef") == "S":
            lat = -lat
        if _text(tags, "GPS GPSLongitudeRef") == "W":
            lon = -lon
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or lat != lat or lon != lon:
            return None
        if lat == 0 and lon == 0:
            return None
        return {"lat": round(lat, 6), "lon": round(lon, 6)}
    except Exception:  # noqa: BLE001 - malformed GPS is simply absent evidence
        return None


def read_exif(data: bytes) -> ExifEvidence:
    """Capture date, camera, software and GPS from the original bytes; never raises."""
    import exifread

    try:
        tags = exifread.process_file(io.BytesIO(data), details=False, extract_thumbnail=False)
    except Exception as exc:  # noqa: BLE001 - exifread raises many things on hostile input
        log.debug("EXIF unreadable: %s", exc)
        return ExifEvidence(readable=False)
    if not tags:
        return ExifEvidence()
    make = _text(tags, "Image Make")
    model = _text(tags, "Image Model")
    camera = None
    if make and model:
        camera = model if model.lower().startswith(make.lower()) else f"{make} {model}"
    else:
        camera = make or model
    when = _parse_datetime(_text(tags, "EXIF DateTimeOriginal")) or _parse_datetime(
        _text(tags, "EXIF DateTimeDigitized"))
    return ExifEvidence(
        datetime_original=when,
        camera=camera,
        software=_text(tags, "Image Software"),
        gps=_gps(tags),
        description=_text(tags, "Image ImageDescription", limit=2000),
    )
