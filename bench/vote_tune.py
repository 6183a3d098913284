"""Vote-level tuning harness for the compact local index (TUNE split only).

    python bench/vote_tune.py [--size 1000000] [--originals 40] [--negatives 400]

Why: a full `bench/scale.py` pass at 1 M references takes most of an hour; the parameters
of `CompactFeatureIndex.vote` can be compared in minutes by recording every query the
checker sends to the local index once, then replaying those queries through variants of
the vote. Recorded per call: the query features, whether it was a probe (fewer votes
needed) and which query picture it belonged to.

Figures per variant, on the recorded calls:
* reach: positives whose true reference is among the candidates of at least one full vote
  (what verification could then confirm; an upper bound on recall of the local stage);
* rank-1: positives where it is the first candidate of some call;
* candidates per call (each costs one verification), and CPU ms per call for positives and
  negatives (median and p95 of the per-query sums).

The recording run goes through whole-picture, mirror and region votes as the checker does
(its own early stops included), so a variant that finds more in a later region is not seen.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scale  # noqa: E402

import imgverify  # noqa: E402
from imgverify.signals import compact as C  # noqa: E402
from imgverify.signals.features import LocalFeatures  # noqa: E402


@dataclass
class Call:
    task: int
    query: LocalFeatures
    probe: bool


@dataclass
class Recorder:
    """Stands in for the local index during the recording run."""

    inner: Any
    calls: list[Call] = field(default_factory=list)
    task: int = -1

    @property
    def probe_votes(self) -> int:
        return int(self.inner.probe_votes)

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def nbytes(self) -> int:
        return int(self.inner.nbytes)

    def vote(self, query: LocalFeatures, top: int = C.TOP, min_votes: int = C.MIN_VOTES
             ) -> list[tuple[int, int]]:
        self.calls.append(Call(self.task, query, min_votes < C.MIN_VOTES))
        return self.inner.vote(query, top, min_votes)  # type: ignore[no-any-return]

    def probe(self, query: LocalFeatures) -> bool:
        self.calls.append(Call(self.task, query, True))
        return bool(self.inner.probe(query))

    def verify(self, *a: Any, **k: Any) -> Any:
        return self.inner.verify(*a, **k)


DEFAULT = dict(qph=C.QUERY_PER_HALF, slack=C.WORD_SLACK, he_max=C.HE_MAX_DISTANCE,
               sigma=C.HE_SIGMA, min_votes=C.MIN_VOTES, chance=C.CHANCE_FACTOR,
               min_weight=C.MIN_WEIGHT, top=C.TOP, stop=0.0, stop_min=0,
               burst="abs", dedup=False)


def vote_variant(ix: C.CompactFeatureIndex, query: LocalFeatures, probe: bool,
                 p: dict[str, Any], truth: int | None) -> tuple[list[int], int | None]:
    """(candidate keys, rank of `truth` among all references above chance or None)."""
    if p.get("lib"):  # the library's own vote, as shipped (or with module constants set)
        mv = ix.probe_votes if probe else p["min_votes"]
        patch = {k[2:]: v for k, v in p.items() if k.startswith("C_")}
        saved = {k: getattr(C, k) for k in patch}
        for k, v in patch.items():
            setattr(C, k, v)
        try:
            gate = p.get("gate", 0)
            if gate and not probe and len(query) > gate and not ix.vote(
                    LocalFeatures(query.points[:gate], query.descriptors[:gate],
                                  query.width, query.height),
                    top=1000, min_votes=ix.probe_votes):
                return [], None  # a whole-picture probe gate, as regions have
            # a probe as the library asks it: its own chance bar (PROBE_CHANCE_REFERENCES)
            chance = C.PROBE_CHANCE_REFERENCES if probe else None
            keys = [k for k, _v in ix.vote(query, top=1000, min_votes=mv,
                                           chance_references=chance)]
        finally:
            for k, v in saved.items():
                setattr(C, k, v)
        rank = keys.index(truth) if truth is not None and truth in keys else None
        return keys[:p["top"]], rank
    desc = np.ascontiguousarray(query.descriptors)
    if desc.shape[0] == 0:
        return [], None
    words, dist = ix.vocabulary.assign(desc, p["qph"])
    keep = dist <= dist[:, :1] + p["slack"]
    q_idx = np.nonzero(keep)[0]
    w = words[keep]
    lo = np.asarray(ix.offsets[w], dtype=np.int64)
    hi = np.asarray(ix.offsets[w + 1], dtype=np.int64)
    lengths = hi - lo
    if p["stop"]:
        mean = len(ix) / max(1, int(np.count_nonzero(np.diff(np.asarray(ix.offsets)))))
        cap = max(p["stop_min"], p["stop"] * mean)
        ok_w = lengths <= cap
        q_idx, w, lo, lengths = q_idx[ok_w], w[ok_w], lo[ok_w], lengths[ok_w]
    total = int(lengths.sum())
    if total == 0:
        return [], None
    query_he = ix.vocabulary.embed(desc[q_idx], w)
    q, rows, he_int, pos_ok = _scan_with_positions(lo, lengths, query_he, q_idx, w, ix,
                                                   p["he_max"])
    hd = he_int.astype(np.float64)
    if rows.size == 0:
        return [], None
    if p["dedup"]:  # each reference posting and each (descriptor, reference) votes once
        order = np.lexsort((hd, pos_ok))
        first = np.ones(order.size, bool)
        first[1:] = pos_ok[order][1:] != pos_ok[order][:-1]
        sel = order[first]
        key = q[sel] * np.int64(ix.references) + rows[sel]
        order2 = np.lexsort((hd[sel], key))
        first2 = np.ones(order2.size, bool)
        first2[1:] = key[order2][1:] != key[order2][:-1]
        sel = sel[order2[first2]]
        rows, q, hd = rows[sel], q[sel], hd[sel]
    per_q = np.bincount(q, minlength=len(query)).astype(np.float64)
    fan = per_q
    if p["burst"] == "rel":  # fan-out relative to the query's typical descriptor
        fan = per_q / max(1.0, float(np.median(per_q[per_q > 0])))
    elif p["burst"] == "none":
        fan = np.ones_like(per_q)
    weight = np.exp(-(hd / p["sigma"]) ** 2) / np.sqrt(np.maximum(1.0, fan[q]))
    min_votes = ix.probe_votes if probe else p["min_votes"]
    votes_all = np.bincount(rows, minlength=ix.references)
    uniq = np.flatnonzero(votes_all >= min_votes)
    if uniq.size == 0:
        return [], None
    weighted = np.bincount(rows, weights=weight, minlength=ix.references)[uniq]
    share = np.asarray(ix.ref_counts[uniq], np.float64) / max(1, len(ix))
    expected = float(weight.sum()) * share
    ok2 = weighted >= p["chance"] * expected + p["min_weight"]
    cand = np.flatnonzero(ok2)
    order = cand[np.argsort(-weighted[cand], kind="stable")]
    keys = [int(ix.ref_keys[uniq[i]]) for i in order]
    rank = keys.index(truth) if truth is not None and truth in keys else None
    return keys[:p["top"]], rank


_NUMBERS: dict[int, np.ndarray] = {}


def _scan_with_positions(lo: np.ndarray, lengths: np.ndarray, query_he: np.ndarray,
                         q_idx: np.ndarray, words: np.ndarray, ix: C.CompactFeatureIndex,
                         he_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The library's posting scan, run on posting numbers instead of rows so the posting
    behind each vote is known too (for the de-duplication variant)."""
    numbers = _NUMBERS.get(id(ix))
    if numbers is None:
        numbers = _NUMBERS[id(ix)] = np.arange(len(ix), dtype=np.int64)
    bits, starts = ix.tables_of(words, lengths)
    k, pos, d = C.scan_postings(lo, lengths, query_he, bits, starts, np.asarray(ix.buckets),
                                np.asarray(ix.he), numbers, he_max)
    return q_idx[k], np.asarray(ix.postings)[pos].astype(np.int64), d, pos


def replay(ix: C.CompactFeatureIndex, calls: list[Call], tasks: list[Any],
           truth: dict[int, int | None], p: dict[str, Any]) -> dict[str, Any]:
    reach: dict[int, bool] = {}
    first: dict[int, bool] = {}
    ms: dict[int, float] = {}
    ncand = []
    gated: set[int] = set()  # tasks whose next full vote a failed probe cancels
    seen: set[int] = set()  # tasks whose whole-picture vote was replayed
    after_probe = False
    neg_probes = [0, 0]  # negatives' probes, and those passed (each a region described)
    neg_cand = 0  # negatives' candidates of full votes (each a verification)
    for c in calls:
        t0 = time.process_time()
        if not c.probe and c.task in seen and not after_probe and p.get("mirror_probe") \
                and len(c.query) > p["mirror_probe"]:
            # a mirror vote (a full vote neither first nor after a probe), gated by a probe
            # of its strongest descriptors as regions are
            n = p["mirror_probe"]
            head = LocalFeatures(c.query.points[:n], c.query.descriptors[:n], c.query.width,
                                 c.query.height)
            if not vote_variant(ix, head, True, p, None)[0]:
                gated.add(c.task)
        after_probe = c.probe
        seen.add(c.task)
        if not c.probe and c.task in gated:
            gated.discard(c.task)
            ms[c.task] = ms.get(c.task, 0.0) + (time.process_time() - t0) * 1000
            continue
        keys, rank = vote_variant(ix, c.query, c.probe, p, truth[c.task])
        ms[c.task] = ms.get(c.task, 0.0) + (time.process_time() - t0) * 1000
        negative = truth[c.task] is None
        if c.probe:  # the region's full vote (next) happens only when its probe passes
            if negative:
                neg_probes[0] += 1
                neg_probes[1] += bool(keys)
            if keys:
                gated.discard(c.task)
            else:
                gated.add(c.task)
            continue
        ncand.append(len(keys))
        if negative:
            neg_cand += len(keys)
        if truth[c.task] is not None:
            reach[c.task] = reach.get(c.task, False) or truth[c.task] in keys
            first[c.task] = first.get(c.task, False) or rank == 0
    by_group: dict[str, list[bool]] = {}
    for i, t in enumerate(tasks):
        if t[0].startswith("pos:"):
            by_group.setdefault(t[0][4:], []).append(reach.get(i, False))
    pos_ms = [ms.get(i, 0.0) for i, t in enumerate(tasks) if t[0] not in ("neg", "skip")]
    neg_ms = [ms.get(i, 0.0) for i, t in enumerate(tasks) if t[0] == "neg"]
    return {"reach": {g: float(np.mean(v)) for g, v in by_group.items()},
            "reach_all": float(np.mean([reach.get(i, False) for i in truth
                                        if truth[i] is not None])),
            "rank1": float(np.mean([first.get(i, False) for i in truth
                                    if truth[i] is not None])),
            "cand_per_call": float(np.mean(ncand)) if ncand else 0.0,
            "pos_ms_p50": float(np.percentile(pos_ms, 50)),
            "pos_ms_p95": float(np.percentile(pos_ms, 95)),
            "neg_ms_p50": float(np.percentile(neg_ms, 50)),
            "neg_ms_p95": float(np.percentile(neg_ms, 95)),
            "neg_probes_passed": neg_probes[1] / max(1, len(neg_ms)),
            "neg_probes": neg_probes[0] / max(1, len(neg_ms)),
            "neg_cand": neg_cand / max(1, len(neg_ms))}


_S = {"stop": 50.0, "stop_min": 2000}
VARIANTS: dict[str, dict[str, Any]] = {
    "lib": {"lib": True},
    "lib_top4": {"lib": True, "top": 4},
    "lib_top2": {"lib": True, "top": 2},
    # the per-lookup chance-hit budget (C.HE_HIT_BUDGET; inf: 3 bits on every list, as
    # before it), and a whole-picture probe gate as regions have
    "budget_inf": {"lib": True, "top": 4, "C_HE_HIT_BUDGET": float("inf")},
    "budget20": {"lib": True, "top": 4, "C_HE_HIT_BUDGET": 20.0},
    "budget100": {"lib": True, "top": 4, "C_HE_HIT_BUDGET": 100.0},
    "budget50_min2": {"lib": True, "top": 4, "C_HE_HIT_BUDGET": 50.0, "C_HE_MIN_DISTANCE": 2},
    "gate160": {"lib": True, "top": 4, "gate": 160},
    # the count-based chance bar (C.CHANCE_REFERENCES: references expected to reach a
    # candidate's votes by chance; inf: off, as before it), and a probe gate on mirror votes
    "nfa_off": {"lib": True, "top": 4, "C_CHANCE_REFERENCES": float("inf")},
    "nfa1": {"lib": True, "top": 4, "C_CHANCE_REFERENCES": 1.0},
    "nfa0.1": {"lib": True, "top": 4, "C_CHANCE_REFERENCES": 0.1},
    "nfa100": {"lib": True, "top": 4, "C_CHANCE_REFERENCES": 100.0},
    "mirror_probe": {"lib": True, "top": 4, "mirror_probe": 160},
    # (record with --set CHANCE_REFERENCES=inf so that the regions a looser bar opens are
    # in the recording)
    "nfa10": {"lib": True, "top": 4, "C_CHANCE_REFERENCES": 10.0},
    "no_stop": {"stop": 0.0},
    "stop50": _S,
    "stop20": {"stop": 20.0, "stop_min": 2000},
    "stop50_rel": {**_S, "burst": "rel"},
    "stop50_none": {**_S, "burst": "none"},
    "stop50_rel_top16": {**_S, "burst": "rel", "top": 16},
    "stop50_rel_he4": {**_S, "burst": "rel", "he_max": 4},
    "stop50_rel_qph3": {**_S, "burst": "rel", "qph": 3},
    "stop50_rel_mv3": {**_S, "burst": "rel", "min_votes": 3},
    "stop50_rel_w15": {**_S, "burst": "rel", "min_weight": 1.5},
    "rel_dedup": {**_S, "burst": "rel", "dedup": True},
    "rel_dedup_w15": {**_S, "burst": "rel", "dedup": True, "min_weight": 1.5},
    "rel_dedup_w25": {**_S, "burst": "rel", "dedup": True, "min_weight": 2.5},
    "rel_dedup_mv5": {**_S, "burst": "rel", "dedup": True, "min_votes": 5},
    "rel_dedup_c10": {**_S, "burst": "rel", "dedup": True, "chance": 10.0},
    "rel_w25": {**_S, "burst": "rel", "min_weight": 2.5},
    "stop50_he4": {**_S, "he_max": 4},
    "stop50_qph3": {**_S, "qph": 3},
    "stop50_top16": {**_S, "top": 16},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--negatives", type=int, default=400)
    ap.add_argument("--neg-photos", type=int, default=100)
    ap.add_argument("--pool", type=int, default=400)
    ap.add_argument("--salt", default="scale")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--calls", default="",
                    help="a .pkl of recorded votes: replayed if it exists, else written")
    ap.add_argument("--replay-negatives", type=int, default=150,
                    help="negative queries whose votes are replayed per variant (cost figures)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a constant of imgverify.signals.compact for the whole run "
                         "(the recording checker included), e.g. HE_HIT_BUDGET=50")
    args = ap.parse_args()
    scale.set_constants(C, args.set)
    args.split = "tune"  # never the report split: this is where parameters are chosen
    if not scale.PHOTOS.is_dir():
        sys.exit(f"skipped: {scale.PHOTOS} not found")
    real, real_index, real_feats, pool, freq, tasks, keys = scale.prepare(args)
    archive: Any
    archive, built = scale.build_scaled(real, real_index, real_feats, pool, freq, args.size)
    print(f"built {args.size:,}: {built}", flush=True)
    rec = Recorder(archive.local)
    archive.local = rec
    truth: dict[int, int | None] = {
        i: (keys[t[2]] if t[2] else None) for i, t in enumerate(tasks)}
    saved = Path(args.calls) if args.calls else None
    if saved is not None and saved.exists():
        rec.calls = pickle.loads(saved.read_bytes())
        print(f"replaying {len(rec.calls)} votes from {saved}", flush=True)
    else:
        found = 0
        t0 = time.perf_counter()
        for i, (kind, _edit, ref_id, data) in enumerate(tasks):
            rec.task = i
            res = imgverify.check(data, archive, align=False)
            top = res.matches[0].reference_id if res.matches else None
            if kind != "neg" and res.verdict in (scale.LIKELY, scale.POSSIBLY) and top == ref_id:
                found += 1
        print(f"recorded {len(rec.calls)} votes over {len(tasks)} queries in "
              f"{time.perf_counter() - t0:.0f} s; checker found {found} of "
              f"{sum(1 for v in truth.values() if v is not None)} positives", flush=True)
        if saved is not None:
            saved.write_bytes(pickle.dumps(rec.calls))
    ix = rec.inner
    negs = [i for i, t in enumerate(tasks) if t[0] == "neg"][:args.replay_negatives]
    keep = {i for i, t in enumerate(tasks) if t[0] != "neg"} | set(negs)
    calls = [c for c in rec.calls if c.task in keep]
    sub = [t if i in keep else ("skip", "", None, b"") for i, t in enumerate(tasks)]
    for name in args.variants.split(","):
        p = dict(DEFAULT, **VARIANTS[name])
        r = replay(ix, calls, sub, truth, p)
        groups = " ".join(f"{g}={100 * v:.1f}" for g, v in r["reach"].items())
        print(f"{name:>14}: reach {100 * r['reach_all']:.1f}% ({groups}) rank1 "
              f"{100 * r['rank1']:.1f}% cand/call {r['cand_per_call']:.1f} ms pos "
              f"{r['pos_ms_p50']:.0f}/{r['pos_ms_p95']:.0f} neg {r['neg_ms_p50']:.0f}/"
              f"{r['neg_ms_p95']:.0f}; per negative: probes passed {r['neg_probes_passed']:.2f}"
              f" of {r['neg_probes']:.1f}, candidates {r['neg_cand']:.2f}", flush=True)


if __name__ == "__main__":
    main()
