"""The novelty filter's inner loops, compiled (numba): overlap counts, bound-ordered exact LCS, posting appends.

Compiled once per machine on first use (a few seconds) and cached on disk (numba's cache=True: generation's
__pycache__, or the user cache directory when that is read-only). Python's per-candidate numpy calls were
the cost before (about 40 calls of 1-5 us each, against 0.2 us per LCS), so everything per candidate is one
call here. All arithmetic on scores is rouge_score's float operations in its order (see novelty.fmeasure).
"""
from __future__ import annotations

import numpy as np
from numba import njit

_SLACK = 1e-9  # the overlap bound only prunes, and rounding in rouge_score's formula is ~1e-16
_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_M1, _M2 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333)
_M4, _H01 = np.uint64(0x0F0F0F0F0F0F0F0F), np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True)
def _popcount(x):
    x = x - ((x >> _ONE) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@njit(cache=True, nogil=True)
def _lcs(masks, local, tok, start, n, m, v):
    """LCS length of the candidate (bit i of masks[l] set where its token i has local id l) and tok[start:start+n]:
    the bit-parallel algorithm of Hyyro (2004), what rapidfuzz's LCSseq runs, over ceil(m/64) words."""
    words = v.size
    for w in range(words):
        v[w] = _ALL
    for j in range(start, start + n):
        li = local[tok[j]]
        if li < 0:  # a token the candidate lacks matches nothing: v is unchanged
            continue
        carry = np.uint64(0)
        for w in range(words):
            x = v[w]
            u = x & masks[li, w]
            s = x + u
            c1 = s < x
            s2 = s + carry
            carry = np.uint64(1) if c1 or s2 < s else np.uint64(0)
            v[w] = s2 | (x - u)  # x - u == x & ~mask
    zeros = 0
    for w in range(words):
        bits = m - 64 * w
        valid = _ALL if bits >= 64 else (_ONE << np.uint64(bits)) - _ONE
        zeros += int(_popcount(~v[w] & valid))
    return zeros


@njit(cache=True, nogil=True)
def _lcs64(bits, tok, start, n, m):
    """_lcs for m <= 64 (almost every instruction): one word in a register, the mask read straight from bits
    (indexed by token id; 0 for tokens the candidate lacks, which leave v unchanged), no branch."""
    v = _ALL
    for j in range(start, start + n):
        u = v & bits[tok[j]]
        v = (v + u) | (v - u)
    valid = _ALL if m == 64 else (_ONE << np.uint64(m)) - _ONE
    return int(_popcount(~v & valid))


@njit(cache=True, nogil=True)
def _by_count(touched, nt, counts, m):
    """touched[:nt] sorted by counts, highest first (counting sort: counts are 1..m)."""
    start = np.zeros(m + 2, np.int64)
    for i in range(nt):
        start[m - counts[touched[i]] + 1] += 1
    for b in range(1, m + 2):
        start[b] += start[b - 1]
    order = np.empty(nt, np.int32)
    for i in range(nt):
        b = m - counts[touched[i]]
        order[start[b]] = touched[i]
        start[b] += 1
    return order


@njit(cache=True, nogil=True)
def score_pool(cand, keys, k, scores_all, tok, off, lens, kstart, klen, entries, counts, touched, local, bits,
               top_scores, top_ids):
    """The k best pool texts for a candidate (token ids `cand`, occurrence keys `keys`), exactly.

    Writes them to top_scores/top_ids, best first, ties broken by the higher pool id (np.argsort(kind="stable")
    reversed) and returns how many there are (only texts sharing a token score > 0). counts, touched and local
    are scratch (zero, any, -1 on entry and on return), and bits (zero). With scores_all of pool size, every score is written
    there (for the mean) and nothing is pruned.

    Overlap counts come from the posting lists (pool ids per occurrence key: the k-th copy of a token is its own
    key, so shared keys count the multiset overlap c). LCS <= c and ROUGE-L F = 2*LCS/(m+n), so a text scores
    at most 2*min(c, n)/(m+n) <= 2c/(m+c): texts are visited by c, highest first, and the LCS runs only where
    the bound can still reach the k-th score so far.
    """
    m = cand.size
    every = scores_all.size > 0
    nt = 0
    for key in keys:
        for e in range(kstart[key], kstart[key] + klen[key]):
            pid = entries[e]
            touched[nt] = pid  # branch-free: kept only if new
            nt += counts[pid] == 0
            counts[pid] += 1
    # counting sort of the touched texts by c, highest first (every text is scored with scores_all: no need)
    order = touched
    if not every:
        order = _by_count(touched, nt, counts, m)

    # match masks: per token id in bits (one word), or over a local alphabet of the candidate's distinct tokens
    wide = m > 64
    masks = np.zeros((m if wide else 0, (m + 63) // 64), np.uint64)
    v = np.empty((m + 63) // 64, np.uint64)
    distinct = 0
    for i in range(m):
        if not wide:
            bits[cand[i]] |= _ONE << np.uint64(i)
        else:
            if local[cand[i]] < 0:
                local[cand[i]] = distinct
                distinct += 1
            masks[local[cand[i]], i >> 6] |= _ONE << np.uint64(i & 63)
    filled = 0
    for i in range(nt):
        pid = order[i]
        c, n = counts[pid], lens[pid]
        if filled == k and not every:
            low = top_scores[k - 1] - _SLACK
            if 2.0 * c / (m + c) < low:
                break  # every later text shares at most c
            if 2.0 * min(c, n) / (m + n) < low:
                continue
        if c == 1:  # one shared token occurrence: LCS 1
            lcs = 1
        elif wide:
            lcs = _lcs(masks, local, tok, off[pid], n, m, v)
        else:
            lcs = _lcs64(bits, tok, off[pid], n, m)
        precision, recall = lcs / n, lcs / m
        f = 2 * precision * recall / (precision + recall)
        if every:
            scores_all[pid] = f
        if filled < k:
            j = filled
            filled += 1
        elif f > top_scores[k - 1] or (f == top_scores[k - 1] and pid > top_ids[k - 1]):
            j = k - 1
        else:
            continue
        while j > 0 and (f > top_scores[j - 1] or (f == top_scores[j - 1] and pid > top_ids[j - 1])):
            top_scores[j], top_ids[j] = top_scores[j - 1], top_ids[j - 1]
            j -= 1
        top_scores[j], top_ids[j] = f, pid
    for i in range(nt):
        counts[touched[i]] = 0
    for i in range(m):
        local[cand[i]] = -1
        bits[cand[i]] = 0
    return filled


@njit(cache=True, nogil=True)
def append_postings(keys, pid, kstart, klen, kcap, entries, used):
    """Append pool id `pid` to the posting list of each key. A list lives in a slot of `entries`; a full one moves
    to a slot twice as large at the end (amortised O(1); at most ~3x the entries). Returns (entries, used)."""
    for key in keys:
        size = klen[key]
        if size == kcap[key]:
            cap = max(4, 2 * size)
            if used + cap > entries.size:
                grown = np.empty(max(2 * entries.size, used + cap), np.int32)
                grown[:used] = entries[:used]
                entries = grown
            entries[used:used + size] = entries[kstart[key]:kstart[key] + size]
            kstart[key], kcap[key] = used, cap
            used += cap
        entries[kstart[key] + size] = pid
        klen[key] = size + 1
    return entries, used
