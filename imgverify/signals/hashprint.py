"""Hash records for `imgverify hash`: Meta-compatible PDQ by default, or the matching pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np

from imgverify.errors import ImgVerifyError
from imgverify.media.load import (
    Limits,
    decode,
    read_source,
    reduction_scale,
    reference_image,
)
from imgverify.signals.hashing import (
    BITS,
    PictureHasher,
    hex_of,
    imagehash_to_int,
    pdq_hash,
    whash_default,
)


def hash_file(source: str, algorithms: list[str], limits: Limits | None = None,
              fast: bool = False) -> dict[str, Any]:
    """{"input": .., "pdq": hex, "pdq_quality": int, "phash": hex, ...} or an "error" entry.

    The default record is the exchange format: PDQ exactly as Meta's pdqhash computes it on
    the full-resolution, stored-orientation pixels, and pHash/dHash/wHash exactly as imagehash
    computes them (default arguments) on the same pixels.
    """
    limits = limits or Limits()
    record: dict[str, Any] = {"input": source}
    try:
        name, data = read_source(source, limits)
        if fast:
            rgb, size, _fmt = decode(data, name, limits, reduce=True)
            hs = PictureHasher(rgb, reduction_scale(size, rgb.size)).hashset(0)
            for a in algorithms:
                record[a] = hex_of(hs.get(a), BITS[a])
                if a == "pdq":
                    record["pdq_quality"] = hs.pdq_quality
            return record
        rgb_image = reference_image(data, name, limits)
        if "pdq" in algorithms:
            value, quality = pdq_hash(np.asarray(rgb_image))
            record["pdq"] = hex_of(value, 256)
            record["pdq_quality"] = quality
        small = [a for a in algorithms if a != "pdq"]
        if small:
            import imagehash

            # each imagehash function starts with convert("L"): do it once
            gray = rgb_image.convert("L")
            funcs = {"phash": lambda g: imagehash_to_int(imagehash.phash(g)),
                     "dhash": lambda g: imagehash_to_int(imagehash.dhash(g)),
                     "whash": whash_default}
            for a in small:
                record[a] = hex_of(funcs[a](gray), 64)
    except ImgVerifyError as exc:
        record["error"] = exc.to_dict()
    return record
