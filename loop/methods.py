"""The generation methods, by the name the config gives (generation.method).

Each module in generation/methods/ has the same small surface:
- Config: its config dataclass, the generation.<section> of the run config;
- STEERED: whether the task weights steer it (the others are faithful baselines that sample as published; their
  task weights are logged for comparison only);
- start(g, pool, chunks, load_embedder) -> State, its own state, with to_json() and restore(saved) for the checkpoint;
- run_round(teacher, state, g, weights, round_idx, seed, rng, closed_book) -> (kept rows, rejected rows, stats);
- STREAMS: whether run_round also takes emit(kept, rejected), to hand its rows over as they are decided.
Every method runs through the same cached, cost-accounted teacher, so the controller, the outputs and the ledger do
not care how the data was made. A new method is one new module and one line below.
"""
from __future__ import annotations

import logging
from functools import partial

from generation.config import GenerationConfig
from generation.data.corpus import Chunk
from generation.data.pool import PoolItem
from generation.filters.embeddings import Embedder
from generation.methods import alpaca, daig, dynosaur, evol, self_instruct
from loop.models import ModelError, resolve_embedding_model

log = logging.getLogger("daig")

METHODS = {"daig": daig, "self_instruct": self_instruct, "alpaca": alpaca, "evol_instruct": evol, "dynosaur": dynosaur}


def steered(method: str) -> bool:
    return METHODS[method].STEERED


def start_method(g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list[Chunk], cache_dir: str, num_threads: int,
                 device: str = "cpu", dtype: str = "float32"):
    """The method's start state; bad input (seeds, dataset) fails here, before any model loads. device, dtype: the
    embedder's, as the device policy resolved them (loop/device.py)."""
    return METHODS[g.method].start(g, pool, chunks, partial(make_embedder, g, cache_dir, num_threads, device, dtype))


def make_embedder(g: GenerationConfig, cache_dir: str, num_threads: int, device: str = "cpu", dtype: str = "float32"):
    """The sentence-embedding model for sedi's embedding distance; None (ROUGE-L) when not asked for or not loadable."""
    n = g.novelty
    if n.filter != "sedi" or n.sedi_distance != "embedding":
        return None
    try:
        path = resolve_embedding_model(n.embedding_model, cache_dir)
    except ModelError as e:
        log.warning("generation.novelty.embedding_model: %s; the sedi filter falls back to ROUGE-L distance", e)
        return None
    return Embedder(path, num_threads, device=device, dtype=dtype)


def generate_round(teacher, state, g: GenerationConfig, weights: dict[str, float], round_idx: int, seed: int, rng,
                   closed_book: bool = True, emit=None):
    """closed_book: the student trains without the chunk in its prompt (training.include_context false).
    emit(kept, rejected): given, the rows go to it as they are decided and the returned lists are empty; a method
    that STREAMS (DAIG) calls it a window of requests at a time, so a large round is never held whole; the others once."""
    method = METHODS[g.method]
    if method.STREAMS:
        return method.run_round(teacher, state, g, weights, round_idx, seed, rng, closed_book, emit)
    kept, rejected, stats = method.run_round(teacher, state, g, weights, round_idx, seed, rng, closed_book)
    if emit is None:
        return kept, rejected, stats
    emit(kept, rejected)
    return [], [], stats


def task_universe(g: GenerationConfig, pool: dict[str, list[PoolItem]], rows: list[dict]) -> list[str]:
    """The tasks weights are kept over: the pool's for steered methods, else whatever labels the rows carry."""
    if steered(g.method):
        return list(pool)
    return sorted({r["task"] for r in rows})
