"""ROUGE-L novelty filter: the Self-Instruct / Alpaca decisions, exact, without scoring every pair.

The reference (tatsu-lab/stanford_alpaca generate_instruction.py; yizhongw/self-instruct does the same)
scores each new instruction against every pool text with rouge_score's rougeL (no stemmer), drops it when
the best F-measure is > 0.7, and otherwise adds it to the pool at once. Same scores and decisions here
(the F-measure is rouge_score's float arithmetic, so ties at exactly 0.7 go the same way), but a
candidate only touches the pool texts that can matter:

* The pool is an inverted index: token occurrence (the k-th copy of a token is its own key) -> pool ids.
  Reading the candidate's lists counts c, the multiset token overlap, for every text sharing a token;
  the others score 0.
* LCS <= c, so F = 2*LCS/(m+n) <= 2*min(c, n)/(m+n): texts are scored by c, highest first, and the exact
  LCS (bit-parallel, as rapidfuzz's) runs only where that bound can still reach the k-th score so far.
* The mean over the whole pool needs every sharing text's LCS, so it is opt-in: with_mean=True.

The per-candidate loop is compiled (generation/filters/novelty_kernel.py, numba).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from rapidfuzz.distance import LCSseq

from generation.filters.novelty_kernel import append_postings, score_pool

# rouge_score tokenize.tokenize without a stemmer: lower-case, every char outside a-z0-9 -> space, split,
# keep tokens matching ^[a-z0-9]+$. The maximal a-z0-9 runs of the lower-cased text are exactly those.
_TOKEN = re.compile(r"[a-z0-9]+")
_NO_SCORES = np.empty(0)


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


def _grown(array: np.ndarray, size: int, fill) -> np.ndarray:
    """`array` with room for at least `size` items (doubling), new items set to `fill`."""
    if size <= len(array):
        return array
    out = np.full(max(size, 2 * len(array)), fill, array.dtype)
    out[:len(array)] = array
    return out


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
      (np.mean of every score, in pool order), but it costs an LCS against every text sharing a token
      (see bench/novelty_filter.py), so it is off by default.
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
        # one id space: token -> id for its first occurrence in a text, (token, k) -> id for the k-th
        self._ids: dict[object, int] = {}
        self._tok, self._ntok = np.empty(1024, np.int32), 0  # the pool's token ids, concatenated
        self._off = np.zeros(256, np.int64)  # text i is _tok[_off[i]:_off[i] + _lens[i]]
        self._lens = np.zeros(256, np.int32)
        self._kstart, self._klen, self._kcap = (np.zeros(1024, np.int64) for _ in range(3))  # posting list slots
        self._entries, self._used = np.empty(4096, np.int32), 0
        self._counts = np.zeros(256, np.int32)  # kernel scratch, per pool text
        self._touched = np.empty(256, np.int32)
        self._local = np.full(1024, -1, np.int32)  # kernel scratch, per id
        self._bits = np.zeros(1024, np.uint64)  # kernel scratch, per id
        self._top_scores, self._top_ids = np.empty(max(top_k, 1)), np.empty(max(top_k, 1), np.int32)
        self._last: tuple = (None, None)  # the last text encoded and its arrays

    def __len__(self) -> int:
        return len(self.texts)

    def __getstate__(self) -> dict:
        """Pickle (the loop's checkpoints) the settings and pool texts only; the index is rebuilt on load."""
        return {"threshold": self.threshold, "no_token_text": self.no_token_text, "top_k": self.top_k,
                "with_mean": self.with_mean, "texts": self.texts}

    def __setstate__(self, state: dict) -> None:  # also reads an earlier version's full __dict__ (same keys)
        self.__init__(state["threshold"], state["no_token_text"], state["top_k"], state["with_mean"])
        self.add(state["texts"])

    def add(self, texts: Iterable[str]) -> None:
        for text in texts:
            self._add(text, *self._encode(text))

    def check(self, text: str) -> NoveltyResult:
        """Score `text` against the pool (adds nothing): decision, best, top_k and, with with_mean, the mean."""
        return self._score(*self._encode(text), max(self.top_k, 1), self.top_k, self.with_mean)

    def check_and_add(self, text: str) -> tuple[bool, float]:
        """(kept, best); a kept text joins the pool, so later texts in the same stream are checked against it."""
        tok, keys = self._encode(text)
        res = self._score(tok, keys, 1, 1, False)
        if res.kept:
            self._add(text, tok, keys)
        return res.kept, res.best

    def _encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and occurrence keys (the same unless a token repeats)."""
        if text == self._last[0]:  # check(text) then add([text]): encode once
            return self._last[1]
        ids = self._ids
        tokens = tokenize(text)
        tok = list(map(ids.get, tokens))
        if None in tok:
            tok = [ids.setdefault(t, len(ids)) for t in tokens]
        if len(set(tok)) < len(tok):
            seen: dict[int, int] = {}
            keys = []
            for t, i in zip(tokens, tok):
                copy = seen[i] = seen.get(i, 0) + 1
                keys.append(i if copy == 1 else ids.setdefault((t, copy), len(ids)))
        else:
            keys = tok
        if len(ids) > len(self._local):
            self._kstart, self._klen, self._kcap = (_grown(a, len(ids), 0) for a in (self._kstart, self._klen, self._kcap))
            self._local = _grown(self._local, len(ids), -1)
            self._bits = _grown(self._bits, len(ids), 0)
        out = np.array(tok, np.int32)
        out = out, out if keys is tok else np.array(keys, np.int32)
        self._last = (text, out)
        return out

    def _add(self, text: str, tok: np.ndarray, keys: np.ndarray) -> None:
        pid = len(self.texts)
        self.texts.append(text)
        if pid == len(self._lens):
            self._off, self._lens, self._counts = (_grown(a, pid + 1, 0) for a in (self._off, self._lens, self._counts))
        self._touched = _grown(self._touched, pid + 2, 0)  # the kernel may write one past the touched texts
        self._tok = _grown(self._tok, self._ntok + len(tok), 0)
        self._tok[self._ntok:self._ntok + len(tok)] = tok
        self._off[pid], self._lens[pid] = self._ntok, len(tok)
        self._ntok += len(tok)
        self._entries, self._used = append_postings(keys, pid, self._kstart, self._klen, self._kcap, self._entries,
                                                    self._used)

    def _score(self, tok: np.ndarray, keys: np.ndarray, k: int, top_k: int, with_mean: bool) -> NoveltyResult:
        m, n_pool = len(tok), len(self.texts)
        if m == 0 or n_pool == 0:  # rouge_score gives 0 when either side has no token
            ranked: list[tuple[float, int]] = []
            scores = None
        else:
            scores = np.zeros(n_pool) if with_mean else _NO_SCORES
            found = score_pool(tok, keys, k, scores, self._tok, self._off, self._lens, self._kstart, self._klen,
                               self._entries, self._counts, self._touched, self._local, self._bits,
                               self._top_scores, self._top_ids)
            ranked = list(zip(self._top_scores[:found].tolist(), self._top_ids[:found].tolist()))
        if len(ranked) < top_k:  # fewer than top_k texts share a token: pad with zeros, later texts first
            done = {pid for _, pid in ranked}
            zeros = ((0.0, pid) for pid in range(n_pool - 1, -1, -1) if pid not in done)
            ranked += itertools.islice(zeros, top_k - len(ranked))
        best = ranked[0][0] if ranked else 0.0
        kept = best <= self.threshold if m else self.no_token_text == "keep"
        mean = None
        if with_mean and n_pool:  # np.mean's own operations (pairwise sum, then / count) without its wrapper
            mean = float(np.add.reduce(scores)) / n_pool if scores is not None else 0.0
        return NoveltyResult(kept, best, [(self.texts[p], s) for s, p in ranked[:top_k]], mean)


def novelty_json(f: NoveltyFilter, base: int) -> dict:
    """What a checkpoint keeps of a novelty pool: how many texts the run started with, and the texts added since."""
    return {"novelty_base": base, "novelty_added": f.texts[base:]}


def restore_novelty(f: NoveltyFilter, saved: dict) -> None:
    """Add a checkpoint's texts to a freshly started pool `f`; refused when the start is not what it was."""
    if "novelty_texts" in saved:  # an older pickled checkpoint kept the whole pool
        texts = saved["novelty_texts"]
        base = len(f.texts) if texts[:len(f.texts)] == f.texts else -1
        saved = {"novelty_base": base, "novelty_added": texts[len(f.texts):]}
    if len(f.texts) != saved["novelty_base"]:
        raise ValueError(f"the pool or seed files changed since this run started ({saved['novelty_base']} novelty texts "
                         f"then, {len(f.texts)} now); restore them, or start a new run")
    f.add(saved["novelty_added"])
