"""imgverify: find recycled and misattributed news photos in a dated reference archive.

    import imgverify
    archive = imgverify.Archive.open("desk.sqlite")     # or imgverify.Archive.default()
    result = imgverify.check("viral.jpg", archive, claimed_date="2024-12-24")
    result.verdict, result.matches[0].event, result.to_dict()
"""

from __future__ import annotations

from imgverify._version import __version__  # noqa: E402
from imgverify.checker import check  # noqa: E402
from imgverify.errors import (  # noqa: E402
    ArchiveError,
    FetchError,
    ImgVerifyError,
    InputError,
    ManifestError,
    UrlRefusedError,
)
from imgverify.match.result import CheckResult, Match  # noqa: E402
from imgverify.match.verdict import Thresholds  # noqa: E402
from imgverify.media.load import Limits, load  # noqa: E402
from imgverify.signals.hashing import HashSet, compute_hashes  # noqa: E402
from imgverify.store.sqlite import Archive, IngestReport, Reference  # noqa: E402

__all__ = [
    "Archive", "ArchiveError", "CheckResult", "FetchError", "HashSet", "ImgVerifyError",
    "IngestReport", "InputError", "Limits", "ManifestError", "Match", "Reference",
    "Thresholds", "UrlRefusedError", "__version__", "check", "compute_hashes", "load",
]
