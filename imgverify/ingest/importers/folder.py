"""Export folders desks already collect, each published image a sighting.

Recognised by their files (several kinds may sit in one folder):

- gallery-dl with ``--write-metadata``: ``NAME.EXT.json`` beside ``NAME.EXT`` (site in
  ``category``; ``date`` as "YYYY-MM-DD HH:MM:SS" UTC; author in ``author``/``user``/
  ``username``/``owner``; text in ``content``/``description``/``caption``/``title``; the
  post's URL in ``post_url``/``permalink``/``tweet_id``...).
- yt-dlp ``NAME.info.json`` with its thumbnail ``NAME.jpg|webp|png`` (``--write-thumbnail``):
  ``timestamp`` (else ``upload_date``), ``webpage_url``, ``uploader``/``channel``,
  ``title`` + ``description``.
- Telegram Desktop's ``result.json`` (one chat, or a full export with ``chats.list``): each
  message with a ``photo`` (or an image ``file``): ``date_unixtime`` (else ``date``),
  ``from``, ``text`` (plain or entity list), ``https://t.me/USERNAME/ID`` when the channel's
  public name is known.
- An X/Twitter archive: ``data/tweets.js`` (``window.YTD.tweets.part0 = [...]``) and
  ``data/tweets_media/TWEETID-MEDIANAME``: ``created_at``, ``full_text``, the account from
  ``data/account.js``, the tweet URL.
- Generic JSON sidecars or one CSV, mapped by a small JSON config (see `SidecarConfig`).

A malformed entry is reported and skipped; the rest of the folder is imported.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgverify.ingest.importers.ingest import Importer, ImportItem, ImportReport
from imgverify.store.sightings import Sighting, normalise_time

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic",
              ".avif")
MAX_JSON_BYTES = 512 * 1024 * 1024
_YTD = re.compile(r"^\s*window\.YTD\.[\w.]+\s*=\s*", re.S)


class EntryError(ValueError):
    """One export entry we cannot use (the others go on)."""


def _get(obj: Any, *paths: str) -> Any:
    """The first non-empty value among dotted paths ('author.name')."""
    for path in paths:
        cur = obj
        for part in path.split("."):
            if isinstance(cur, dict):
                cur = cur.get(part)
            elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                cur = None
                break
        if cur not in (None, "", [], {}):
            return cur
    return None


def _text(value: Any, limit: int = 5000) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # Telegram's entity lists
        value = "".join(v if isinstance(v, str) else str(v.get("text", ""))
                        if isinstance(v, dict) else "" for v in value)
    text = str(value).strip()
    return text[:limit] or None


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("http://", "https://")) \
        else None


def _load_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise EntryError(f"{path.name} is larger than {MAX_JSON_BYTES} bytes")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        return json.loads(_YTD.sub("", text, count=1))
    except json.JSONDecodeError as exc:
        raise EntryError(f"{path.name}: invalid JSON ({exc.msg} at line {exc.lineno})") \
            from None


def _inside(base: Path, rel: Any) -> Path | None:
    """`rel` resolved under `base`; None if it escapes the folder (a hostile export)."""
    if not isinstance(rel, str) or not rel:
        return None
    p = (base / rel).resolve()
    try:
        p.relative_to(base.resolve())
    except ValueError:
        return None
    return p


# -- gallery-dl ---------------------------------------------------------------------------
def _gallery_dl(path: Path) -> tuple[Sighting, Path]:
    meta = _load_json(path)
    if not isinstance(meta, dict):
        raise EntryError(f"{path.name}: not a gallery-dl metadata object")
    image = path.with_name(path.name[:-len(".json")])
    site = str(meta.get("category") or "unknown")
    account = _text(_get(meta, "author.name", "author.nick", "user.name", "username",
                         "owner.username", "owner", "uploader", "author", "user"))
    post_id = _get(meta, "tweet_id", "post_id", "post_shortcode", "shortcode", "id")
    url = _url(_get(meta, "post_url", "permalink", "page_url", "link"))
    if url is None and isinstance(meta.get("permalink"), str) and site == "reddit":
        url = "https://www.reddit.com" + meta["permalink"]
    if url is None and site == "twitter" and post_id and account:
        url = f"https://x.com/{account}/status/{post_id}"
    seen = normalise_time(_get(meta, "date", "published", "created_at", "timestamp"))
    if seen is not None and len(seen) == 19:
        seen += "+00:00"  # gallery-dl writes its datetimes in UTC, without a zone
    key = f"{site}:{post_id or image.name}:{meta.get('num', '')}"
    return Sighting(origin=f"gallery-dl/{site}", source_key=key, seen_at=seen, url=url,
                    account=account,
                    text=_text(_get(meta, "content", "description", "caption", "title")),
                    media_url=_url(meta.get("url")), extra={"sidecar": path.name}), image


# -- yt-dlp -----------------------------------------------------------------------------------
def _yt_dlp(path: Path) -> tuple[Sighting, Path | None]:
    info = _load_json(path)
    if not isinstance(info, dict):
        raise EntryError(f"{path.name}: not a yt-dlp info object")
    stem = path.name[:-len(".info.json")]
    image = next((path.with_name(stem + ext) for ext in IMAGE_EXTS
                  if path.with_name(stem + ext).is_file()), None)
    site = str(info.get("extractor_key") or info.get("extractor") or "unknown").lower()
    title = _text(info.get("title"))
    desc = _text(info.get("description"))
    return Sighting(origin=f"yt-dlp/{site}", source_key=f"{site}:{info.get('id') or stem}",
                    seen_at=normalise_time(info.get("timestamp") or info.get("release_timestamp")
                                           or info.get("upload_date")),
                    url=_url(info.get("webpage_url") or info.get("original_url")),
                    account=_text(info.get("uploader") or info.get("channel")
                                  or info.get("uploader_id")),
                    text=" — ".join(t for t in (title, desc) if t) or None,
                    media_url=_url(info.get("thumbnail")),
                    extra={"sidecar": path.name, "kind": "thumbnail"}), image


# -- Telegram Desktop -----------------------------------------------------------------------
def _telegram_chats(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        return [data]
    chats = _get(data, "chats.list")
    return [c for c in chats if isinstance(c, dict)] if isinstance(chats, list) else []


def _telegram(path: Path, report: Callable[[str, str], None]
              ) -> Iterator[tuple[Sighting, Path | None]]:
    base = path.parent
    for chat in _telegram_chats(_load_json(path)):
        chat_name = _text(chat.get("name"))
        chat_id = chat.get("id")
        username = _get(chat, "username")
        for i, msg in enumerate(chat.get("messages") or []):
            label = f"{path.name}: {chat_name or chat_id} message {i}"
            if not isinstance(msg, dict):
                report(label, "malformed message (not an object)")
                continue
            if msg.get("type", "message") != "message":
                continue
            rel = msg.get("photo")
            if rel is None and str(msg.get("mime_type", "")).startswith("image/"):
                rel = msg.get("file")
            if rel is None:
                continue
            image = _inside(base, rel)
            if image is None:
                report(label, f"photo path {str(rel)[:200]!r} is not a file inside the export "
                       "(not exported, or outside the folder)")
                continue
            mid = msg.get("id")
            seen = normalise_time(msg.get("date_unixtime")) or normalise_time(msg.get("date"))
            if mid is None or seen is None:
                report(label, "message without id or date")
                continue
            url = f"https://t.me/{username}/{mid}" if isinstance(username, str) and \
                re.fullmatch(r"\w{3,64}", username) else None
            yield Sighting(origin="telegram", source_key=f"{chat_id}:{mid}", seen_at=seen,
                           url=url, account=_text(msg.get("from")) or chat_name,
                           text=_text(msg.get("text")),
                           extra={"chat": chat_name, "message_id": mid}), image


# -- X / Twitter archive ----------------------------------------------------------------------
def _x_archive(tweets_js: Path, report: Callable[[str, str], None]
               ) -> Iterator[tuple[Sighting, Path | None]]:
    data_dir = tweets_js.parent
    media_dir = data_dir / "tweets_media"
    username = None
    account_js = data_dir / "account.js"
    if account_js.is_file():
        try:
            username = _get(_load_json(account_js), "0.account.username")
        except EntryError:
            username = None
    items = _load_json(tweets_js)
    if not isinstance(items, list):
        raise EntryError(f"{tweets_js.name}: expected window.YTD.tweets.part0 = [...]")
    for i, item in enumerate(items):
        label = f"{tweets_js.name} item {i}"
        tweet = item.get("tweet", item) if isinstance(item, dict) else None
        if not isinstance(tweet, dict):
            report(label, "malformed tweet (not an object)")
            continue
        tid = tweet.get("id_str") or tweet.get("id")
        media = _get(tweet, "extended_entities.media", "entities.media") or []
        if not isinstance(media, list):
            report(label, "malformed media list")
            continue
        seen = normalise_time(tweet.get("created_at"))
        for n, m in enumerate(media):
            if not isinstance(m, dict) or m.get("type", "photo") != "photo":
                continue
            name = str(m.get("media_url_https") or m.get("media_url") or "").rsplit("/", 1)[-1]
            image = media_dir / f"{tid}-{name}" if tid and name else None
            if tid is None or seen is None:
                report(label, "tweet without id_str or created_at")
                continue
            url = f"https://x.com/{username}/status/{tid}" if username else \
                f"https://x.com/i/web/status/{tid}"
            yield Sighting(origin="x", source_key=f"{tid}:{n}", seen_at=seen, url=url,
                           account=_text(username), text=_text(tweet.get("full_text")
                                                               or tweet.get("text")),
                           media_url=_url(m.get("media_url_https")),
                           extra={"tweet_id": tid}), image if image and image.is_file() \
                else None


# -- generic sidecars ----------------------------------------------------------------------
@dataclass
class SidecarConfig:
    """How a desk's own sidecars map to a sighting (a JSON file)::

        {"origin": "desk-inbox",
         "json_suffix": ".meta.json",        # NAME.jpg + NAME.jpg.meta.json, or
         "csv": "index.csv",                 # one CSV listing the images
         "image": "file",                    # field naming the image (relative path)
         "fields": {"seen_at": "posted_at", "url": "link", "account": "user.name",
                    "text": "caption", "id": "post_id"}}

    Each field value is a dotted path into the sidecar object (or a CSV column).
    """

    origin: str = "sidecar"
    json_suffix: str | None = None
    csv: str | None = None
    image: str = "image"
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SidecarConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read sidecar config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"sidecar config {path} must be a JSON object")
        known = {"origin", "json_suffix", "csv", "image", "fields"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"sidecar config {path}: unknown keys {sorted(unknown)}")
        cfg = cls(**raw)
        if not (cfg.json_suffix or cfg.csv):
            raise ValueError(f"sidecar config {path} needs json_suffix or csv")
        if not isinstance(cfg.fields, dict):
            raise ValueError(f"sidecar config {path}: fields must be an object")
        return cfg

    def sighting(self, obj: dict[str, Any], base: Path, fallback_key: str,
                 image: Path | None = None) -> tuple[Sighting, Path | None]:
        f = self.fields
        if image is None:
            image = _inside(base, _get(obj, self.image))

        def pick(name: str) -> Any:
            return _get(obj, f[name]) if name in f else None

        key = pick("id")
        return Sighting(origin=self.origin, source_key=str(key or fallback_key),
                        seen_at=normalise_time(pick("seen_at")), url=_url(pick("url")),
                        account=_text(pick("account")), text=_text(pick("text")),
                        extra={"sidecar": fallback_key}), image


def _sidecars(folder: Path, cfg: SidecarConfig, report: Callable[[str, str], None]
              ) -> Iterator[tuple[Sighting, Path | None]]:
    if cfg.csv:
        table = _inside(folder, cfg.csv)
        if table is None or not table.is_file():
            raise EntryError(f"CSV {cfg.csv!r} not found inside {folder}")
        with table.open(encoding="utf-8-sig", newline="", errors="replace") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                yield cfg.sighting(dict(row), table.parent, f"{table.name}:{n}")
    if cfg.json_suffix:
        for side in sorted(folder.rglob("*" + cfg.json_suffix)):
            try:
                obj = _load_json(side)
            except EntryError as exc:
                report(str(side.relative_to(folder)), str(exc))
                continue
            if not isinstance(obj, dict):
                report(str(side.relative_to(folder)), "sidecar is not a JSON object")
                continue
            image = side.with_name(side.name[:-len(cfg.json_suffix)])
            explicit = _get(obj, cfg.image)
            yield cfg.sighting(obj, side.parent, str(side.relative_to(folder)),
                               _inside(side.parent, explicit) if explicit else image)


# -- the folder walk -----------------------------------------------------------------------
def detect(folder: Path) -> list[str]:
    """The kinds of export found in `folder` (for messages and the report)."""
    kinds: list[str] = []
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    if "result.json" in names:
        kinds.append("telegram")
    if any(n == "tweets.js" or re.fullmatch(r"tweets-part\d+\.js", n) for n in names):
        kinds.append("x")
    if any(n.endswith(".info.json") for n in names):
        kinds.append("yt-dlp")
    if any(n.lower().endswith(tuple(e + ".json" for e in IMAGE_EXTS)) for n in names):
        kinds.append("gallery-dl")
    return kinds


def _entries(folder: Path, config: SidecarConfig | None,
             report: Callable[[str, str], None]) -> Iterator[tuple[Sighting, Path | None, str]]:
    def rel(p: Path) -> str:
        return str(p.relative_to(folder))

    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        name = path.name
        try:
            if name == "result.json":
                for s, img in _telegram(path, report):
                    yield s, img, f"{rel(path)} #{s.extra.get('message_id')}"
            elif name == "tweets.js" or re.fullmatch(r"tweets-part\d+\.js", name):
                for s, img in _x_archive(path, report):
                    yield s, img, f"{rel(path)} tweet {s.extra.get('tweet_id')}"
            elif name.endswith(".info.json"):
                s, img = _yt_dlp(path)
                yield s, img, rel(path)
            elif name.lower().endswith(tuple(e + ".json" for e in IMAGE_EXTS)) and not (
                    config and config.json_suffix and name.endswith(config.json_suffix)):
                s, img = _gallery_dl(path)
                yield s, img, rel(path)
        except EntryError as exc:
            report(rel(path), str(exc))
        except (OSError, UnicodeError) as exc:
            report(rel(path), f"cannot read: {exc}")
    if config is not None:
        try:
            for s, img in _sidecars(folder, config, report):
                yield s, img, s.extra.get("sidecar", s.source_key)
        except EntryError as exc:
            report(str(folder), str(exc))


def import_folder(importer: Importer, folder: str | os.PathLike[str],
                  config: SidecarConfig | None = None,
                  on_item: Callable[[], None] | None = None) -> ImportReport:
    """Every published image in an export folder, as a sighting (see the module doc)."""
    base = Path(folder)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder")
    for sighting, image, label in _entries(base, config, importer.error):
        if on_item is not None:
            on_item()
        if importer.known(sighting.origin, sighting.source_key):
            continue
        if image is None or not image.is_file():
            importer.error(label, "the image this entry describes is not in the folder")
            continue
        if image.suffix.lower() not in IMAGE_EXTS:
            importer.skip(label, f"not an image file ({image.suffix or 'no extension'})")
            continue
        importer.add(ImportItem(sighting, str(image), None, label=label,
                                image_uri=str(image.resolve())))
    return importer.finish()


__all__ = ["SidecarConfig", "detect", "import_folder"]
