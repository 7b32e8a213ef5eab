"""Novelty decisions for one generated batch: strict (Self-Instruct/Alpaca), SeDi-style diverse subset, or off.

strict: the reference loop. Candidates stream in batch order; each is scored against the pool (seeds + every
  instruction kept so far, earlier candidates of this batch included) and rejected when its best ROUGE-L F
  is > threshold (exactly the threshold is kept).
sedi: SeDi-Instruct's diversity-based filtering (Kim et al. 2025, arXiv:2502.04774) is described, in the
  material we could read (abstract and third-party summaries; no reference code is published), only as "a
  relaxed ROUGE-L threshold" that "enhances the diversity of instructions in a batch" so that fewer generated
  instructions are discarded. Our concrete reading: drop candidates whose similarity to the pool is >
  sedi_threshold; among the rest pick greedily the candidate whose highest similarity to (pool + already
  picked) is lowest (max-min; ties by batch order) and stop once that exceeds sedi_threshold. Similarity is
  exact ROUGE-L F or the cosine of sentence embeddings (an Embedder; it keeps the pool's vectors between
  batches, so each batch embeds only its own candidates).
none: everything is kept (and joins the pool); the best ROUGE-L against the pool is still recorded.

One decision dict per candidate, in batch order: {"filter", "kept", "reason", "score", "top_similar",
"mean_similarity"}; sedi adds "measure" ("rouge" | "embedding") and, on kept ones, "pick" (greedy order, 0-based).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from generation.config import NoveltyConfig
from generation.filters.novelty import NoveltyFilter, rouge_l_f, tokenize

TOP_K = 10  # most similar texts recorded per candidate, as the reference keeps


def filter_batch(candidates: list[str], novelty: NoveltyFilter, cfg: NoveltyConfig, embedder=None) -> list[dict]:
    """Decide every candidate of one batch; kept ones are added to `novelty`'s pool (and `embedder`'s, if given).

    embedder: a generation.filters.embeddings.Embedder, used when cfg.filter == "sedi" and cfg.sedi_distance ==
    "embedding"; None there means ROUGE-L (the fallback when the model cannot be loaded). Use one Embedder per
    NoveltyFilter: it tracks that filter's pool.
    """
    if novelty.threshold != cfg.threshold:  # strict decides with the filter's own threshold
        raise ValueError(f"generation.novelty.threshold={cfg.threshold} but the NoveltyFilter was built with {novelty.threshold}; "
                         f"build it as NoveltyFilter(cfg.threshold, cfg.no_token_text)")
    if cfg.filter == "strict":
        return _strict(candidates, novelty)
    if cfg.filter == "none":
        return _off(candidates, novelty)
    if cfg.sedi_distance == "embedding" and embedder is not None:
        return _sedi(candidates, novelty, cfg.sedi_threshold, _embedding_scores(candidates, novelty, embedder), embedder)
    return _sedi(candidates, novelty, cfg.sedi_threshold, _rouge_scores(candidates, novelty), None)


def _strict(candidates: list[str], novelty: NoveltyFilter) -> list[dict]:
    decisions = []
    for text in candidates:
        res = novelty.check(text)
        if res.kept:
            novelty.add([text])
        reason = "" if res.kept else "similar_to_pool" if res.best > novelty.threshold else "no_tokens"
        decisions.append(_decision("novelty", res.kept, reason, res.best, res.top, res.mean))
    return decisions


def _off(candidates: list[str], novelty: NoveltyFilter) -> list[dict]:
    decisions = []
    for text in candidates:
        res = novelty.check(text)
        novelty.add([text])
        decisions.append(_decision("none", True, "", res.best, res.top, res.mean))
    return decisions


@dataclass
class Scores:
    """Each candidate against the pool, and a similarity between two candidates (by batch index)."""
    measure: str  # "rouge" | "embedding"
    best: list[float]
    top: list[list[tuple[str, float]]]
    mean: list[float | None]
    pair: Callable[[int, int], float]  # pair(j, i): candidate j scored against candidate i (ROUGE-L: i as the reference)
    vectors: np.ndarray | None = None  # the candidates' embeddings (embedding measure)


def _rouge_scores(candidates: list[str], novelty: NoveltyFilter) -> Scores:
    results = [novelty.check(text) for text in candidates]
    return Scores("rouge", [r.best for r in results], [r.top for r in results], [r.mean for r in results],
                  lambda j, i: rouge_l_f(candidates[j], candidates[i]))


def _embedding_scores(candidates: list[str], novelty: NoveltyFilter, embedder) -> Scores:
    pool = embedder.pool_vectors(novelty.texts)
    vecs = embedder.encode(candidates)
    sims = vecs @ pool.T  # unit vectors: cosine similarity, candidates x pool
    best, top, mean = [], [], []
    for row in sims:
        order = np.argsort(-row, kind="stable")[:TOP_K]
        top.append([(novelty.texts[p], float(row[p])) for p in order])
        best.append(float(row[order[0]]) if len(order) else 0.0)
        mean.append(float(row.mean()) if len(row) else None)
    return Scores("embedding", best, top, mean, lambda j, i: float(vecs[j] @ vecs[i]), vecs)


def _sedi(candidates: list[str], novelty: NoveltyFilter, limit: float, sc: Scores, embedder) -> list[dict]:
    best, top, mean, measure = sc.best, sc.top, sc.mean, sc.measure
    decisions: list[dict | None] = [None] * len(candidates)
    current: dict[int, float] = {}  # candidate -> highest similarity to the pool and to the picked ones so far
    near: dict[int, list[tuple[str, float]]] = {}  # candidate -> (picked candidate, similarity), for top_similar
    for i, text in enumerate(candidates):
        if novelty.no_token_text == "reject" and not tokenize(text):
            decisions[i] = _decision("sedi", False, "no_tokens", 0.0, [], None, measure)
        elif best[i] > limit:
            decisions[i] = _decision("sedi", False, "similar_to_pool", best[i], top[i], mean[i], measure)
        else:
            current[i], near[i] = best[i], []
    picked: list[int] = []
    while current:
        i = min(current, key=lambda c: (current[c], c))  # the most novel; ties: earlier in the batch
        if current[i] > limit:
            break
        score = current.pop(i)
        decisions[i] = _decision("sedi", True, "", score, _merge(top[i], near[i]), mean[i], measure)
        decisions[i]["pick"] = len(picked)
        picked.append(i)
        for j in current:
            s = sc.pair(j, i)  # j scored against the picked i, as against a pool text
            near[j].append((candidates[i], s))
            current[j] = max(current[j], s)
    for j, score in current.items():
        decisions[j] = _decision("sedi", False, "similar_in_batch", score, _merge(top[j], near[j]), mean[j], measure)
    kept = sorted(picked)
    n_before = len(novelty.texts)
    novelty.add([candidates[i] for i in kept])
    if sc.vectors is not None and kept:  # the kept ones' vectors join the embedder's pool: no re-encoding next batch
        embedder.extend_pool([candidates[i] for i in kept], sc.vectors[kept], n_before)
    return decisions


def _merge(pool_top: list[tuple[str, float]], batch: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The TOP_K most similar of the pool's and the batch's, best first (a stable sort keeps pool texts first on ties)."""
    return sorted(pool_top + batch, key=lambda item: -item[1])[:TOP_K]


def _decision(name: str, kept: bool, reason: str, score: float, top: list[tuple[str, float]], mean: float | None,
              measure: str | None = None) -> dict:
    d = {"filter": name, "kept": kept, "reason": reason, "score": float(score),
         "top_similar": [[text, float(s)] for text, s in top], "mean_similarity": mean}
    if measure:
        d["measure"] = measure
    return d
