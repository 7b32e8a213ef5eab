"""The ROUGE-L novelty filter decides, scores and ranks exactly like rouge_score + a brute-force loop."""
from __future__ import annotations

import functools
import json
import random
from fractions import Fraction

import numpy as np
import pytest
from conftest import TEST_DATA
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer, scoring

from generation.filters.rules import NoveltyFilter as ReExported
from generation.filters.novelty import NoveltyFilter, NoveltyResult, fmeasure, rouge_l_f, tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
ODD_TEXTS = ["", "   ", "?!...", "写一首关于秋天的诗。", "İstanbul naïve café", "\u212a is a Kelvin sign", "ﬁle ｆｕｌｌ ß",
             "don't stop 3.14 times\tnow\n", "Emoji 🙂 ok", "UPPER lower MiXeD 123abc"]


def reference_f(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


@pytest.fixture(scope="module")
def seeds() -> list[str]:
    return [json.loads(line)["instruction"] for line in (TEST_DATA / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]


def variants(seeds: list[str], count: int, seed: int = 0) -> list[str]:
    """Seed-derived candidates: word drops and swaps (near-duplicates), two seeds spliced, words replaced,
    near-duplicates of earlier candidates, and texts without a-z0-9 tokens."""
    rng = random.Random(seed)
    vocab = [w for s in seeds for w in s.split()]
    out: list[str] = []
    for _ in range(count):
        a, r = rng.choice(seeds).split(), rng.random()
        if r < 0.03:
            out.append(rng.choice(ODD_TEXTS))
            continue
        w = rng.choice(out).split() if r < 0.2 and out else a
        if r < 0.35:
            w = list(w)
            i = rng.randrange(len(w)) if w else 0
            if len(w) > 3 and rng.random() < 0.5:
                del w[i]
            elif i + 1 < len(w):
                w[i], w[i + 1] = w[i + 1], w[i]
        elif r < 0.7:
            b = rng.choice(seeds).split()
            w = a[:rng.randint(1, len(a))] + b[rng.randint(0, len(b) - 1):]
        else:
            w = [x if rng.random() > 0.3 else rng.choice(vocab) for x in a]
        out.append(" ".join(w))
    return out


@functools.lru_cache(maxsize=None)
def ref_tokens(text: str) -> tuple[str, ...]:
    return tuple(SCORER._tokenizer.tokenize(text))


def brute_force(pool: list[str], text: str) -> list[float]:
    """Every pair: rouge_score's tokenizer, an LCS of the token sequences, rouge_score's scoring.fmeasure."""
    a = ref_tokens(text)
    return [scoring.fmeasure(L / len(b), L / len(a)) if (L := LCSseq.similarity(a, b)) else 0.0
            for b in map(ref_tokens, pool)]


def test_reexported_from_filters():
    assert ReExported is NoveltyFilter


def test_tokenizer_matches_rouge_score(seeds):
    for text in seeds + ODD_TEXTS:
        assert tokenize(text) == SCORER._tokenizer.tokenize(text), text
    assert tokenize("\u212a") == ["k"]  # str.lower() maps the Kelvin sign to a-z, as in rouge_score


def test_rouge_l_f_is_rouge_score_bit_for_bit(seeds):
    rng = random.Random(1)
    texts = seeds + variants(seeds, 200, seed=1) + ODD_TEXTS
    long_a = " ".join(rng.choice(["a", "b", "c", "the", "cat"]) for _ in range(150))  # > 64 tokens: multi-word LCS
    long_b = " ".join(rng.choice(["a", "b", "c", "the", "dog"]) for _ in range(90))
    pairs = [(rng.choice(texts), rng.choice(texts)) for _ in range(1500)] + [(long_a, long_b), (long_b, long_a)]
    for a, b in pairs:
        assert rouge_l_f(a, b) == reference_f(a, b), (a, b)  # == on floats: bit for bit


def tie_pair(lcs: int, m: int, n: int) -> tuple[str, str]:
    """Texts of m and n tokens whose LCS is exactly lcs (shared words in order, the rest unique)."""
    shared = [f"s{i}" for i in range(lcs)]
    return " ".join(shared + [f"a{i}" for i in range(m - lcs)]), " ".join([f"b{i}" for i in range(n - lcs)] + shared)


def test_compiled_scores_are_rouge_scores_floats():
    """The kernel's LCS (bit-parallel over 64-bit words) and F arithmetic, on texts of up to 200 tokens."""
    for L, m, n in [(L, m, n) for L in (1, 2, 5, 63, 64, 65, 130) for m in (L, L + 1, 2 * L + 3, 200)
                    for n in (L, L + 7, 199) if m <= 200]:
        a, b = tie_pair(L, m, n)
        nf = NoveltyFilter()
        nf.add([a])
        assert nf.check(b).best == fmeasure(L, m, n) == reference_f(b, a), (L, m, n)
    rng = random.Random(5)  # small alphabets: long runs of matches, carries across words
    for _ in range(300):
        alphabet = ["a", "b", "c", "dd", "e", "f"][:rng.randint(2, 6)]
        a, b = (" ".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(2))
        nf = NoveltyFilter()
        nf.add([a])
        assert nf.check(b).best == rouge_l_f(a, b), (a, b)


def test_decisions_at_exactly_threshold_follow_rouge_scores_floats():
    # 2*lcs/(m+n) == 0.7 exactly in rationals; rouge_score's floats land on 0.7 (kept) or just above (rejected)
    cases = [(L, m, n) for L in (7, 14, 21) for m in range(L, 3 * L) for n in range(L, 3 * L)
             if Fraction(2 * L, m + n) == Fraction(7, 10)]
    kept_exact = rejected_above = 0
    for L, m, n in cases:
        a, b = tie_pair(L, m, n)
        ref = reference_f(b, a)
        nf = NoveltyFilter(threshold=0.7)
        nf.add([a])
        res = nf.check(b)
        assert res.best == ref and res.kept == (not ref > 0.7), (L, m, n, ref)
        assert nf.check_and_add(b) == (res.kept, ref)
        kept_exact += ref == 0.7
        rejected_above += ref > 0.7
    assert kept_exact >= 3 and rejected_above >= 10  # both sides of the tie are exercised (7/10/10 gives 0.7)


def test_text_without_tokens_scores_zero_and_follows_the_option(seeds):
    keep = NoveltyFilter(top_k=3, with_mean=True)
    keep.add(seeds[:5])
    for text in ["", "?!", "写一首诗", "ｆｕｌｌ"]:
        res = keep.check(text)
        assert res == NoveltyResult(True, 0.0, [(seeds[4], 0.0), (seeds[3], 0.0), (seeds[2], 0.0)], 0.0)
        assert max(reference_f(text, s) for s in seeds[:5]) == 0
    assert keep.check_and_add("?!") == (True, 0.0) and keep.texts[-1] == "?!"
    reject = NoveltyFilter(no_token_text="reject")
    reject.add(seeds[:5])
    assert reject.check("写一首诗").kept is False
    assert reject.check_and_add("写一首诗") == (False, 0.0) and len(reject) == 5
    assert reject.check("Describe how volcanoes form and erupt.").kept is True  # a tokenised text is unaffected


def test_empty_pool_and_validation():
    nf = NoveltyFilter(with_mean=True)
    assert nf.check("Write a poem.") == NoveltyResult(True, 0.0, [], None)
    for kwargs, field in [({"threshold": 0}, "threshold"), ({"threshold": 1.5}, "threshold"),
                          ({"no_token_text": "drop"}, "no_token_text"), ({"top_k": -1}, "top_k")]:
        with pytest.raises(ValueError, match=field):
            NoveltyFilter(**kwargs)


def test_check_and_add_counts_texts_kept_earlier_in_the_stream():
    nf = NoveltyFilter()
    nf.add(["Write a haiku about the sea."])
    assert nf.check("Describe how volcanoes form and erupt.").kept and len(nf) == 1  # check adds nothing
    assert nf.check_and_add("Describe how volcanoes form and erupt.") == (True, 0.0)
    kept, best = nf.check_and_add("Describe how volcanoes form and erupt!")  # the same tokens as a stream-mate
    assert (kept, best) == (False, 1.0)
    assert nf.texts == ["Write a haiku about the sea.", "Describe how volcanoes form and erupt."]
    nf.check_and_add("Explain how volcanoes form and erupt.")  # 5 of 6 tokens in order: F = 5/6 > 0.7
    assert len(nf) == 2
    assert NoveltyFilter(threshold=1.0).check_and_add("a")[0]  # F is never > 1: nothing rejected


@pytest.mark.parametrize("threshold,top_k", [(0.7, 10), (0.5, 3), (0.9, 1)])
def test_stream_equals_brute_force_loop(seeds, threshold, top_k):
    stream = variants(seeds, 250, seed=int(threshold * 10))
    fast = NoveltyFilter(threshold=threshold, top_k=top_k)
    decide = NoveltyFilter(threshold=threshold)
    mean = NoveltyFilter(threshold=threshold, top_k=top_k, with_mean=True)
    for nf in (fast, decide, mean):
        nf.add(seeds)
    pool = list(seeds)
    rejected = 0
    for text in stream:
        scores = brute_force(pool, text)
        best = max(scores)
        kept = not best > threshold if tokenize(text) else True
        order = np.argsort(scores, kind="stable")[-top_k:][::-1]
        top = [(pool[i], scores[i]) for i in order]
        res, res_mean = fast.check(text), mean.check(text)
        assert (res.kept, res.best, res.top, res.mean) == (kept, best, top, None), text
        assert (res_mean.kept, res_mean.best, res_mean.top) == (kept, best, top), text
        assert res_mean.mean == float(np.mean(scores))  # exactly the reference's np.mean
        # the reference's np.argsort (default kind) may order equal scores differently: same scores
        default = np.argsort(scores)[-top_k:][::-1]
        assert sorted(scores[i] for i in default) == sorted(s for _, s in res.top)
        assert decide.check_and_add(text) == (kept, best)
        if kept:
            pool.append(text)
            fast.add([text])
            mean.add([text])
        rejected += not kept
    assert fast.texts == decide.texts == mean.texts == pool
    assert 20 < rejected < len(stream) - 20  # both decisions happen


def test_repeated_tokens_and_long_texts_equal_brute_force():
    """A five-word vocabulary: heavy multiset overlaps, texts past 64 tokens, and many tied scores."""
    rng = random.Random(3)
    texts = [" ".join(rng.choice("the cat sat on mat".split()) for _ in range(rng.randint(1, 90))) for _ in range(300)]
    nf = NoveltyFilter(threshold=0.8, top_k=10)
    nf.add(texts[:150])
    pool = texts[:150]
    for text in texts[150:]:
        scores = brute_force(pool, text)
        order = np.argsort(scores, kind="stable")[-10:][::-1]
        res = nf.check(text)
        assert (res.kept, res.best, res.top) == (not max(scores) > 0.8, max(scores), [(pool[i], scores[i]) for i in order])
        assert nf.check(text) == res  # check() changes nothing
        if res.kept:
            nf.add([text])
            pool.append(text)
    assert 150 < len(pool) < 300


def test_small_stream_equals_the_alpaca_loop_with_rouge_score(seeds):
    """The reference itself (rouge_scorer._score_lcs on pre-tokenised pools, argsort top-10, np.mean) on a
    small stream: pure-Python LCS is slow, so a 40-seed pool and 60 candidates."""
    pool_texts = seeds[:40]
    pool_tokens = [SCORER._tokenizer.tokenize(t) for t in pool_texts]
    nf = NoveltyFilter(with_mean=True)
    nf.add(pool_texts)
    for text in variants(seeds[:40], 60, seed=7):
        tokens = SCORER._tokenizer.tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool_tokens]
        res = nf.check(text)
        assert res.kept == (not max(scores) > 0.7) and res.best == max(scores) and res.mean == float(np.mean(scores))
        assert sorted(s for _, s in res.top) == sorted(scores[i] for i in np.argsort(scores)[-10:])
        if res.kept:
            nf.add([text])
            pool_texts.append(text)
            pool_tokens.append(tokens)
    assert nf.texts == pool_texts


def test_pool_and_vocabulary_grow_past_every_initial_capacity():
    """Thousands of distinct tokens, long posting lists and 2,000 pool texts: every array of the index grows."""
    rng = random.Random(11)
    words = [f"w{i}" for i in range(6000)] + ["the"] * 300  # "the": one posting list with most of the pool
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(2050)]
    nf = NoveltyFilter(top_k=5, with_mean=True)
    nf.add(texts[:2000])
    assert len(nf._ids) > 4 * 1024 and len(nf) == 2000
    for text in texts[2000:] + [texts[5], texts[1999]]:
        scores = [rouge_l_f(text, p) for p in texts[:2000]]
        order = np.argsort(scores, kind="stable")[-5:][::-1]
        res = nf.check(text)
        assert (res.best, res.top, res.mean) == (max(scores), [(texts[i], scores[i]) for i in order], float(np.mean(scores)))


def test_pickles_as_settings_and_texts(seeds):
    """The loop's checkpoints pickle the filter: settings and pool only, the index rebuilt on load."""
    import pickle
    nf = NoveltyFilter(threshold=0.6, no_token_text="reject", top_k=4, with_mean=True)
    nf.add(seeds[:60])
    nf.check("a text that adds tokens to the vocabulary only")
    blob = pickle.dumps(nf)
    assert len(blob) < 2 * len(pickle.dumps(seeds[:60]))
    back = pickle.loads(blob)
    assert (back.threshold, back.no_token_text, back.top_k, back.with_mean, back.texts) == (0.6, "reject", 4, True, nf.texts)
    for text in variants(seeds, 40, seed=2):
        assert back.check(text) == nf.check(text)
        assert back.check_and_add(text) == nf.check_and_add(text)
    old = NoveltyFilter.__new__(NoveltyFilter)  # an earlier version's pickle: its whole __dict__
    old.__setstate__({"threshold": 0.7, "no_token_text": "keep", "top_k": 10, "with_mean": False, "texts": seeds[:5],
                      "_seqs": ["x"], "_postings": {}})
    assert old.texts == seeds[:5] and old.check(seeds[0]).best == 1.0
