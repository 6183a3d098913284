"""Importers: dated photos from where they are published, each copy kept as a sighting.

`commons` (any MediaWiki wiki's API), `folder` (gallery-dl, yt-dlp, Telegram Desktop and
X/Twitter exports, generic sidecars), `feed` (RSS/Atom with Media RSS) and `wayback` (first
capture from the Internet Archive's CDX API). All of them go through `ingest.Importer`, which
hashes each image, links it to the reference it matches or keeps it as a record of its own,
and reports earlier sightings that a new reference matches.
"""
