"""The shipped ORB vocabulary and the compact index's vote on real photos: the Hamming
embedding separates copies from strangers that share a word, and stop words are skipped.
"""

from __future__ import annotations

import io

import numpy as np
from conftest import bsds, coco
from PIL import Image

from imgverify.signals.compact import CompactFeatureIndex
from imgverify.signals.features import QUERY_FEATURES, REF_FEATURES, LocalFeatures, extract
from imgverify.signals.vocabulary import Vocabulary, chance_agreement, default_vocabulary


def _features(paths: list) -> list[LocalFeatures]:
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(extract(im.convert("RGB"), REF_FEATURES))
    return out


def test_unrelated_descriptors_of_one_word_rarely_agree_in_the_embedding() -> None:
    feats = _features(coco(20) + bsds(20))
    desc = np.concatenate([f.descriptors for f in feats])
    owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(feats)])
    shipped = default_vocabulary()
    fixed = Vocabulary(shipped.first, shipped.second)  # version 1: the same bits for all words
    per_word = chance_agreement(shipped, desc, owner)
    at_fixed = chance_agreement(fixed, desc, owner)
    assert per_word < 0.15, per_word
    assert per_word < 0.5 * at_fixed, (per_word, at_fixed)


def test_a_copy_keeps_most_of_its_embedding() -> None:
    """Descriptors of a cropped, shrunk, recompressed copy at the same spot of the photo,
    filed under a word both share, mostly stay within the vote's 3 bits."""
    vocab = default_vocabulary()
    near = []
    for p in bsds(24, start=20):
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        ref = extract(rgb, REF_FEATURES)
        w, h = rgb.size
        copy = rgb.crop((w // 10, h // 10, w - w // 10, h - h // 10))
        copy = copy.resize((int(copy.width * 0.6), int(copy.height * 0.6)))
        buf = io.BytesIO()
        copy.save(buf, "JPEG", quality=70)
        query = extract(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), QUERY_FEATURES)
        qpts = query.points * 0.8 + 0.1  # back into the photo's coordinates
        d = np.linalg.norm(ref.points[None, :, :] - qpts[:, None, :], axis=2)
        ham = np.unpackbits(query.descriptors[:, None, :] ^ ref.descriptors[None, :, :],
                            axis=2).sum(axis=2)
        ham[d > 0.006] = 999
        qi = np.flatnonzero(ham.min(axis=1) <= 64)
        ri = ham[qi].argmin(axis=1)
        rw = vocab.assign(ref.descriptors[ri], 1)[0][:, 0]
        qw = vocab.assign(query.descriptors[qi], 1)[0][:, 0]
        same = rw == qw
        if same.any():
            a = vocab.embed(ref.descriptors[ri][same], rw[same])
            b = vocab.embed(query.descriptors[qi][same], rw[same])
            near.extend((np.bitwise_count(a ^ b) <= 3).tolist())
    assert len(near) > 200
    assert np.mean(near) > 0.7, np.mean(near)


def test_stop_words_are_not_looked_up() -> None:
    """A word that thousands of references hold (a flat sky, a station logo) is skipped:
    its votes would say nothing and gathering them cost most of a query."""
    vocab = default_vocabulary()
    desc = _features(bsds(1, start=40))[0].descriptors[:1]
    word = int(vocab.assign(desc, 1)[0][0, 0])
    he = vocab.embed(desc, np.array([word]))

    def index(holders: int) -> CompactFeatureIndex:
        # `holders` references hold the query's word with its exact embedding; 1,000 others
        # hold one rare word each (so the mean list stays short)
        others = np.array([(word + 1 + i) % vocab.words for i in range(1000)])
        words = np.concatenate([np.full(holders, word), others])
        rows = np.arange(holders + 1000, dtype=np.uint32)
        hes = np.concatenate([np.repeat(he, holders), np.zeros(1000, np.uint16)])
        return CompactFeatureIndex.from_postings(
            np.arange(holders + 1000, dtype=np.int64), np.ones(holders + 1000, np.uint16),
            words, rows, hes, loader=lambda keys: {}, vocabulary=vocab)

    query = LocalFeatures(np.zeros((1, 2), np.float32), desc, 100, 100)
    common, stop = index(1500), index(5000)
    assert common.stop_length < 5000 and stop.stop_length < 5000
    assert common._hits(query).rows.size == 1500
    assert stop._hits(query).rows.size == 0
