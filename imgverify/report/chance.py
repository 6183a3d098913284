"""How likely an unrelated photo is to match this closely: a score that means something.

Each stage has its own measured null distribution (bench/null_fit.py, on the TUNE split of
bsds500 + coco128): the combined hash distance of unrelated photo pairs, and the number of
RANSAC inliers local features find between unrelated photos. Their tails are fitted with a
straight line in log10 and extrapolated, so the small figures are estimates, and reports say
so. A per-pair rate p becomes, against an archive of N references, a chance of about
1 - (1 - p)^N that any of them matches an unrelated photo as closely.
"""

from __future__ import annotations

import math
from typing import Any

from imgverify.match.result import Match
from imgverify.match.verdict import combined_distance

#: log10(per-pair rate) = a + b * combined distance (bench/null_fit.py, global hashes: the
#: lowest 1 % of 171,125 unrelated pairs, the same fit bench/thresholds.py chose the
#: thresholds with; rate 8e-10 at the "likely" threshold 0.15)
GLOBAL_NULL = (-14.581, 36.656)
#: the closest combined distance seen between unrelated photos, and how many pairs
GLOBAL_MEASURED_MIN = 0.264
GLOBAL_PAIRS = 171_125
#: log10 P(inliers >= n) per pair = c + e * n (bench/null_fit.py, local features: 14,400
#: unrelated pairs, inliers median 3, 99th percentile 6, most 10)
LOCAL_NULL = (3.218, -0.7543)
#: the most inliers seen between unrelated photos: beyond it the rate is extrapolated
LOCAL_MEASURED_MAX = 10
LOCAL_PAIRS = 14_400
#: Below this, a rate is reported as "below" it: the fits are not worth more digits.
FLOOR = 1e-15
_HASHES = ("pdq", "phash", "dhash", "whash")


def per_pair_rate(m: Match) -> float | None:
    """The estimated chance that one unrelated photo matches as closely as `m` did, by the
    strongest of its stages; None for an identical file (no estimate needed)."""
    if m.exact_copy:
        return None
    rates = []
    hashes = {k: v for k, v in m.distances.items() if k in _HASHES}
    if hashes:
        a, b = GLOBAL_NULL
        rates.append(10 ** min(0.0, a + b * combined_distance(hashes)))
    inliers = m.distances.get("local_inliers")
    if inliers is not None:
        c, e = LOCAL_NULL
        rates.append(10 ** min(0.0, c + e * inliers))
    if not rates:
        return None
    return max(FLOOR, min(rates))


def against_archive(rate: float, references: int | None) -> float:
    """Chance that any of `references` unrelated references matches this closely."""
    n = max(1, references or 1)
    return -math.expm1(n * math.log1p(-min(rate, 1 - 1e-12)))


def one_in(p: float) -> str:
    """1e-7 -> 'about 1 in 10 million'; tiny figures say they are below the floor."""
    if p <= FLOOR:
        return "below 1 in a thousand trillion"
    if p >= 0.5:
        return "more than even"
    inv = 1.0 / p
    for value, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"),
                        (1e3, "thousand")):
        if inv >= value:
            x = inv / value
            return f"about 1 in {x:.0f} {word}" if x >= 10 else f"about 1 in {x:.1g} {word}"
    return f"about 1 in {inv:.2g}"


def chance_of(m: Match, references: int | None) -> dict[str, Any] | None:
    """{"per_pair", "per_check", "words"}: the JSON form of the estimate for one match."""
    rate = per_pair_rate(m)
    if rate is None:
        return None
    check = against_archive(rate, references)
    n = references or 1
    words = (f"The chance that an unrelated photo matches an archived one this closely is "
             f"{one_in(rate)} (estimated from {_stage(m)}); across the {n:,} archived "
             f"photo{'s' if n != 1 else ''} checked, {one_in(check)}.")
    return {"per_pair": float(f"{rate:.3g}"), "per_check": float(f"{check:.3g}"),
            "words": words}


def _stage(m: Match) -> str:
    """Which measured null the estimate comes from, and whether it is extrapolated."""
    hashes = {k: v for k, v in m.distances.items() if k in _HASHES}
    inliers = m.distances.get("local_inliers")
    bits = []
    if hashes:
        d = combined_distance(hashes)
        bits.append("the hash distances of " + (f"{GLOBAL_PAIRS:,} unrelated photo pairs"
                    if d >= GLOBAL_MEASURED_MIN else
                    f"{GLOBAL_PAIRS:,} unrelated photo pairs, extrapolated: none came as "
                    "close"))
    if inliers is not None:
        bits.append("the keypoint counts of " + (f"{LOCAL_PAIRS:,} unrelated photo pairs"
                    if inliers <= LOCAL_MEASURED_MAX else
                    f"{LOCAL_PAIRS:,} unrelated photo pairs, extrapolated: none had more "
                    f"than {LOCAL_MEASURED_MAX}"))
    return " and ".join(bits)
