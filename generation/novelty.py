"""ROUGE-L novelty filter: the Self-Instruct / Alpaca decisions, exact, without scoring every pair.

The reference (tatsu-lab/stanford_alpaca generate_instruction.py; yizhongw/self-instruct does the same)
scores each new instruction against every pool text with rouge_score's rougeL (no stemmer), drops it when
the best F-measure is > 0.7, and otherwise adds it to the pool at once. Same scores and decisions here
(the F-measure is rouge_score's float arithmetic, so ties at exactly 0.7 go the same way), but a
candidate only touches the pool texts that can matter:

* F = 2*LCS/(m+n) and LCS <= the multiset overlap of tokens, so a text sharing at most x token
  occurrences with an m-token candidate scores at most G[x] = F(lcs=x, m, n=x).
* Prefix filtering: a text sharing > x occurrences holds one of ANY m-x of the candidate's occurrences.
  The pool is an inverted index (token occurrence -> pool ids); the decision reads the m-x occurrences
  with the shortest posting lists, x the largest with G[x] <= threshold, and scores only the texts
  whose overlap bound can be > threshold: a rejection usually ends there.
* The exact best of a kept text (and any top-k > 1) reads every list and scores, best bounds first, only
  the texts whose overlap bound can still beat the k-th score so far (the exact LCS runs in C:
  rapidfuzz on token ids).
* The mean over the whole pool needs every pair's LCS (one rapidfuzz.process.cdist over the pool), so
  it is opt-in: with_mean=True.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

# rouge_score tokenize.tokenize without a stemmer: lower-case, every char outside a-z0-9 -> space, split,
# keep tokens matching ^[a-z0-9]+$. The maximal a-z0-9 runs of the lower-cased text are exactly those.
_TOKEN = re.compile(r"[a-z0-9]+")
_MAX_VOCAB = 0x110000  # a token id is one character (any code point, surrogates included) so LCS runs in C
_CHEAP_READ = 4096  # posting entries always worth reading in the first round (cheaper than a second round)
_EMPTY = np.empty(0, np.int32)
_size = operator.attrgetter("n")


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokenizer (use_stemmer=False). Note str.lower() can create a-z ('K' Kelvin sign -> 'k')."""
    return _TOKEN.findall(text.lower())


def fmeasure(lcs: int, m: int, n: int) -> float:
    """ROUGE-L F-measure for an LCS of token sequences of lengths m and n, with rouge_score's float operations
    in its order (rouge_scorer._score_lcs + scoring.fmeasure), so scores equal it bit for bit."""
    if m == 0 or n == 0:
        return 0.0
    precision, recall = lcs / n, lcs / m
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge_l_f(a: str, b: str) -> float:
    """Exact ROUGE-L F between two texts: RougeScorer(['rougeL']).score(a, b)['rougeL'].fmeasure (symmetric)."""
    ta, tb = tokenize(a), tokenize(b)
    ids: dict[str, str] = {}
    sa = "".join(ids.setdefault(t, chr(len(ids))) for t in ta)
    sb = "".join(ids.setdefault(t, chr(len(ids))) for t in tb)
    return fmeasure(LCSseq.similarity(sa, sb), len(ta), len(tb))


def _fmeasure_array(lcs: np.ndarray, m: int, n: np.ndarray) -> np.ndarray:
    """fmeasure for arrays with lcs >= 1 and n >= 1: the same IEEE operations in the same order."""
    precision, recall = lcs / n, lcs / m
    return 2 * precision * recall / (precision + recall)


def _top_indices(scores: np.ndarray, k: int) -> list[int]:
    """np.argsort(scores, kind="stable")[-k:][::-1] (ties: the higher index first) without sorting everything."""
    if k == 0:
        return []
    if k >= len(scores):
        return np.argsort(scores, kind="stable")[::-1].tolist()
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    above = np.flatnonzero(scores > kth)
    picked = np.concatenate([above, np.flatnonzero(scores == kth)[::-1][:k - len(above)]])
    return picked[np.lexsort((-picked, -scores[picked]))].tolist()


class _Growable:
    """An append-only array (posting lists, pool lengths and sequences) that numpy reads without copying."""

    def __init__(self, dtype=np.int32):
        self.buf, self.n = np.empty(4, dtype), 0

    def append(self, value) -> None:
        if self.n == len(self.buf):
            self.buf = np.concatenate([self.buf, np.empty(len(self.buf), self.buf.dtype)])
        self.buf[self.n] = value
        self.n += 1

    def view(self) -> np.ndarray:
        return self.buf[:self.n]


def _occurrences(seq: str) -> list[str]:
    """One key per token occurrence, so shared keys count the multiset overlap: the first copy of token c is c,
    the k-th c + str(k) (a token is one character, so the keys cannot collide)."""
    keys = list(seq)
    if len(set(seq)) < len(seq):
        seen: dict[str, int] = {}
        for i, c in enumerate(seq):
            k = seen[c] = seen.get(c, 0) + 1
            if k > 1:
                keys[i] = c + str(k)
    return keys


@dataclass
class NoveltyResult:
    kept: bool  # best <= threshold (text without a-z0-9 tokens: per no_token_text)
    best: float  # highest ROUGE-L F against the pool (0.0 for an empty pool)
    top: list[tuple[str, float]]  # the top_k most similar pool texts, best first; ties: the later pool text first
    mean: float | None  # np.mean of the scores against the whole pool (with_mean=True and a non-empty pool), else None


class NoveltyFilter:
    """Reject a text whose ROUGE-L F against any pool text is > threshold; kept texts join the pool.

    no_token_text: a text with no a-z0-9 token (all non-Latin, punctuation, empty) scores 0 against
      everything; "keep" it (the reference behaviour) or "reject" it (its best stays 0.0).
    top_k: how many most similar pool texts check() reports (the reference keeps 10). Ties are ordered
      later pool text first, i.e. np.argsort(scores, kind="stable")[-k:][::-1]; the reference's default
      (unstable) argsort may order equal scores differently, the scores are the same.
    with_mean: check() also returns the mean score over the whole pool, as the reference records. Exact
      (np.mean of every score, in pool order), but it costs an LCS against every pool text (all-pairs
      speed: about 2-3x check() at 5,000 kept, see bench/novelty_filter.py), so it is off by default.
    """

    def __init__(self, threshold: float = 0.7, no_token_text: str = "keep", top_k: int = 10, with_mean: bool = False):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold: must be in (0, 1], got {threshold}")
        if no_token_text not in ("keep", "reject"):
            raise ValueError(f"no_token_text: must be 'keep' or 'reject', got {no_token_text!r}")
        if top_k < 0:
            raise ValueError(f"top_k: must be >= 0, got {top_k}")
        self.threshold, self.no_token_text, self.top_k, self.with_mean = threshold, no_token_text, top_k, with_mean
        self.texts: list[str] = []
        self._seqs: list[str] = []  # token ids as characters
        self._seq_array = _Growable(object)  # the same, for fancy indexing
        self._lens = _Growable()
        self._vocab: dict[str, str] = {}
        self._postings: dict[str, _Growable] = {}  # occurrence key -> pool ids holding it
        self._bound_cache: dict[int, tuple[list[float], int]] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, texts: Iterable[str]) -> None:
        for text in texts:
            self._add(text, self._encode(text))

    def check(self, text: str) -> NoveltyResult:
        """Score `text` against the pool (adds nothing): decision, best, top_k and, with with_mean, the mean."""
        return self._score(self._encode(text), max(self.top_k, 1), self.with_mean, self.top_k)

    def check_and_add(self, text: str) -> tuple[bool, float]:
        """(kept, best); a kept text joins the pool, so later texts in the same stream are checked against it."""
        seq = self._encode(text)
        res = self._score(seq, 1, False, 1)
        if res.kept:
            self._add(text, seq)
        return res.kept, res.best

    def _add(self, text: str, seq: str) -> None:
        pid = len(self.texts)
        self.texts.append(text)
        self._seqs.append(seq)
        self._seq_array.append(seq)
        self._lens.append(len(seq))
        postings = self._postings
        for key in _occurrences(seq):
            posting = postings.get(key)
            if posting is None:
                posting = postings[key] = _Growable()
            posting.append(pid)

    def _encode(self, text: str) -> str:
        tokens = tokenize(text)
        chars = list(map(self._vocab.get, tokens))
        if None in chars:  # new tokens get the next ids
            for i, token in enumerate(tokens):
                if chars[i] is None:
                    if len(self._vocab) >= _MAX_VOCAB:
                        raise ValueError(f"NoveltyFilter: a pool holds at most {_MAX_VOCAB} distinct tokens; split the pool")
                    chars[i] = self._vocab.setdefault(token, chr(len(self._vocab)))
        return "".join(chars)

    def _score(self, seq: str, k: int, with_mean: bool, top_k: int) -> NoveltyResult:
        m, n_pool = len(seq), len(self.texts)
        if m == 0 or n_pool == 0:  # rouge_score gives 0 when either side has no token
            best_heap: list[tuple[float, int]] = []
        elif with_mean:
            return self._score_all(seq, top_k)
        else:
            best_heap = self._top(seq, k)
        ranked = sorted(best_heap, reverse=True)
        if len(ranked) < top_k:  # fewer than top_k texts share a token: pad with zeros, later texts first
            done = {pid for _, pid in ranked}
            zeros = ((0.0, pid) for pid in range(n_pool - 1, -1, -1) if pid not in done)
            ranked += itertools.islice(zeros, top_k - len(ranked))
        best = ranked[0][0] if ranked else 0.0
        kept = best <= self.threshold if m else self.no_token_text == "keep"
        mean = 0.0 if with_mean and n_pool else None
        return NoveltyResult(kept, best, [(self.texts[p], s) for s, p in ranked[:top_k]], mean)

    def _score_all(self, seq: str, top_k: int) -> NoveltyResult:
        """Every pool score (one C call over the pool); the mean is np.mean over the pool, like the reference's."""
        lcs = process.cdist([seq], self._seqs, scorer=LCSseq.similarity, dtype=np.int32, workers=1)[0]
        scores = np.zeros(len(self.texts))
        shared = lcs > 0
        scores[shared] = _fmeasure_array(lcs[shared], len(seq), self._lens.view()[shared])
        order = _top_indices(scores, top_k)
        best = float(scores.max())
        return NoveltyResult(best <= self.threshold, best, [(self.texts[p], float(scores[p])) for p in order],
                             float(np.mean(scores)))

    def _top(self, seq: str, k: int) -> list[tuple[float, int]]:
        """The k best (score, pool id) exactly, as a min-heap (ties: the higher id ranks higher)."""
        m = len(seq)
        found = [p for p in map(self._postings.get, _occurrences(seq)) if p is not None]
        found.sort(key=_size)
        lists = [_EMPTY] * (m - len(found)) + [p.view() for p in found]  # tokens new to the pool: empty, read first
        bound, q = self._bounds(m)
        # check_and_add (k == 1) reads in two steps. First the q rarest occurrences, q where no unread text
        # (sharing <= m-q) can be > threshold, plus lists short enough to be cheaper read now than in a second
        # step; it scores the texts that can be > threshold (the decision) and a few best-bounded ones (for a
        # k-th score). Done when nothing unread or unscored can beat the k-th (typically a rejection); else
        # read every list and score what can beat it. A top-10 is rarely settled by the first step, so k > 1
        # reads every list at once. (Reading all in the second step, rather than just enough for the k-th
        # score, and skipping the first step for k > 1, were both faster on bench/novelty_filter.py.)
        total = cheap = 0
        for lst in lists:
            total += len(lst)
            if total > _CHEAP_READ:
                break
            cheap += 1
        q = max(q, cheap)
        heap: list[tuple[float, int]] = []
        if q < m and k == 1:
            counts = np.bincount(np.concatenate(lists[:q]), minlength=len(self.texts)) if q else None
            if counts is not None:
                self._visit(seq, counts, m - q, bound, self.threshold, k, heap)
            if len(heap) == k and bound[m - q] < heap[0][0] and self.threshold <= heap[0][0]:
                return heap
            more = np.bincount(np.concatenate(lists[q:]), minlength=len(self.texts))
            counts = more if counts is None else np.add(counts, more, out=counts)
        else:
            counts = np.bincount(np.concatenate(lists), minlength=len(self.texts))
        self._visit(seq, counts, 0, bound, 0.0, k, heap)
        return heap

    def _bounds(self, m: int) -> tuple[list[float], int]:
        """G[x] = F(lcs=x, m, n=x), the best score of a text sharing x occurrences, and how many of the m
        rarest occurrences to read so that no unread text can be > threshold."""
        cached = self._bound_cache.get(m)
        if cached is None:
            bound = [0.0] + [fmeasure(x, m, x) for x in range(1, m + 1)]
            cached = self._bound_cache[m] = (bound, sum(g > self.threshold for g in bound[1:]))
        return cached

    def _visit(self, seq: str, counts: np.ndarray, rest: int, bound: list[float], low: float, k: int,
               heap: list[tuple[float, int]]) -> None:
        """Exact scores, best bounds first, for the texts not yet scored that can score >= low and enter the top k.

        A text holding c of the read occurrences shares <= c + rest, so it scores <= bound[c + rest]; with
        its length n, <= 2*min(c + rest, n)/(m+n) (give or take 1e-9 for the rounding of rouge_score's
        formula: the bound only prunes, it never decides). While the heap is not full, the best-bounded
        texts are scored first, whatever `low` is, to get a k-th score.
        """
        m = len(seq)
        kth = heap[0][0] if len(heap) == k else 0.0
        ids = np.flatnonzero(counts >= max(1, bisect.bisect_left(bound, kth) - rest))
        n = self._lens.view()[ids]
        shared = counts[ids] + rest if rest else counts[ids]
        half = np.minimum(shared, n) / (n + m)  # half the bound, compared with (cut - 1e-9) / 2: fewer numpy calls
        chunk = 4 if k == 1 else 2 * k + 14  # then 512 a step: a step of numpy calls costs ~40 us, an LCS ~0.2 us
        seeding = len(heap) < k
        while len(ids):
            if not seeding:
                keep = half >= ((max(low, heap[0][0]) if len(heap) == k else low) - 1e-9) / 2
                ids, n, half = ids[keep], n[keep], half[keep]
            if len(ids) <= chunk:
                self._merge(seq, ids, n, counts, k, heap)
                return
            first = np.argpartition(half, -chunk)[-chunk:]
            self._merge(seq, ids[first], n[first], counts, k, heap)
            half[first] = -1.0  # scored: the next filter drops them
            chunk, seeding = 512, False

    def _merge(self, seq: str, ids: np.ndarray, n: np.ndarray, counts: np.ndarray, k: int,
               heap: list[tuple[float, int]]) -> None:
        """Exact scores for pool texts `ids` of lengths `n` (LCS in C); the better ones enter the heap."""
        if not len(ids):
            return
        counts[ids] = -(1 << 40)  # scored: never again, whatever is read later
        m = len(seq)
        if len(ids) <= 4:  # one C call each beats the numpy calls below
            seqs, lcs = self._seqs, LCSseq.similarity
            items = [(fmeasure(lcs(seq, seqs[pid]), m, n_i), pid) for pid, n_i in zip(ids.tolist(), n.tolist())]
        else:
            lcs = process.cdist([seq], self._seq_array.view()[ids].tolist(), scorer=LCSseq.similarity,
                                dtype=np.int32, workers=1)[0]
            scores = _fmeasure_array(lcs, m, n)
            # only what can enter: >= the k-th score so far, or the batch's own k best (and their ties)
            cut = heap[0][0] if len(heap) == k else np.partition(scores, -k)[-k] if len(scores) > k else -1.0
            better = scores >= cut
            items = zip(scores[better].tolist(), ids[better].tolist())
        for item in items:
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
