"""One round of whichever generation method the config names, behind one call.

Every method runs through the same cached, cost-accounted teacher and returns (kept rows, rejected rows,
stats), so the controller, the outputs and the ledger do not care how the data was made. What a method
carries from round to round (the novelty pool, machine-written instructions, the evolving pool, the
Dynosaur tasks seen) lives in MethodState.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from generation.alpaca import run_alpaca_round
from generation.config import GenerationConfig
from generation.corpus import Chunk
from generation.daig import plan_requests, run_daig_round
from generation.rows import RoundStats
from generation.dynosaur import DatasetMeta, load_dataset_meta, run_dynosaur_round
from generation.embeddings import Embedder
from generation.evol import run_evol_round
from generation.filters import NoveltyFilter
from generation.pool import PoolItem
from generation.seeds import SeedTask, load_seed_tasks, seeds_from_pool
from generation.self_instruct import run_self_instruct_round
from loop.models import ModelError, resolve_embedding_model

log = logging.getLogger("daig")

# Methods that sample by task weight, so feedback steers them; the others are faithful baselines that sample
# uniformly as published, and their task weights are logged for comparison only.
STEERED = ("daig", "evol_instruct")


@dataclass
class MethodState:
    pool: dict[str, list[PoolItem]]
    chunks: list[Chunk]
    novelty: NoveltyFilter | None = None
    embedder: Embedder | None = None
    seeds: list[SeedTask] = field(default_factory=list)  # Self-Instruct / Alpaca seed tasks
    machine: list[str] = field(default_factory=list)  # machine-written instructions kept so far
    meta: DatasetMeta | None = None  # Dynosaur: the dataset's metadata and rows
    seen: set = field(default_factory=set)  # Dynosaur: tasks proposed so far
    chunk_counts: dict[str, int] = field(default_factory=dict)  # kept rows per domain chunk so far (coverage)
    chunk_requests: dict[str, int] = field(default_factory=dict)  # DAIG requests per domain chunk so far (stratified sampling)
    novelty_base: int = 0  # novelty pool texts start_method put there (the checkpoint saves only those added later)


def start_method(g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list[Chunk], cache_dir: str,
                 num_threads: int) -> MethodState:
    """Load what the method needs (seeds, dataset) and seed the novelty pool; bad input fails here, before any model loads."""
    state = MethodState(pool=pool, chunks=chunks)
    pool_texts = [item.instruction for items in pool.values() for item in items]
    if g.method in ("self_instruct", "alpaca"):
        spec = g.self_instruct if g.method == "self_instruct" else g.alpaca
        state.seeds = load_seed_tasks(spec.seed_tasks, spec.seed_split) if spec.seed_tasks else seeds_from_pool(
            [item for items in pool.values() for item in items])
        clf_only = g.method == "self_instruct" and g.self_instruct.classification_seeds_only
        # The reference's novelty pool is the seeds it shows: only classification ones under --use_clf_seed_tasks_only.
        pool_texts = [s.instruction for s in state.seeds if s.is_classification or not clf_only]
    elif g.method == "dynosaur":
        state.meta = load_dataset_meta(g.dynosaur)
    if g.method in ("daig", "self_instruct", "alpaca"):
        state.novelty = NoveltyFilter(g.novelty.threshold, g.novelty.no_token_text)
        state.novelty.add(pool_texts)
        state.novelty_base = len(state.novelty.texts)
        state.embedder = make_embedder(g, cache_dir, num_threads)
    return state


def make_embedder(g: GenerationConfig, cache_dir: str, num_threads: int):
    """The sentence-embedding model for sedi's embedding distance; None (ROUGE-L) when not asked for or not loadable."""
    n = g.novelty
    if n.filter != "sedi" or n.sedi_distance != "embedding":
        return None
    try:
        path = resolve_embedding_model(n.embedding_model, cache_dir)
    except ModelError as e:
        log.warning("generation.novelty.embedding_model: %s; the sedi filter falls back to ROUGE-L distance", e)
        return None
    return Embedder(path, num_threads)


def generate_round(teacher, state: MethodState, g: GenerationConfig, weights: dict[str, float], round_idx: int,
                   seed: int, rng: random.Random, closed_book: bool = True) -> tuple[list[dict], list[dict], RoundStats]:
    """closed_book: the student trains without the chunk in its prompt (training.include_context false)."""
    if g.method == "daig":
        requested = state.__dict__.setdefault("chunk_requests", {})  # a checkpoint from before this field lacks it
        plan = plan_requests(weights, state.pool, state.chunks, g, rng, state.chunk_counts, requested)
        for _, _, chunk in plan:
            requested[chunk.id] = requested.get(chunk.id, 0) + 1
        kept, rejected, stats = run_daig_round(teacher, plan, g, round_idx, seed, state.novelty, state.embedder, closed_book, tuple(state.pool))
        for row in kept:
            state.chunk_counts[row["chunk_id"]] = state.chunk_counts.get(row["chunk_id"], 0) + 1
        return kept, rejected, stats
    if g.method == "self_instruct":
        return run_self_instruct_round(teacher, state.seeds, state.machine, state.novelty, g, round_idx, seed, rng, state.embedder)
    if g.method == "alpaca":
        return run_alpaca_round(teacher, state.seeds, state.machine, state.novelty, g, round_idx, seed, rng, state.embedder)
    if g.method == "evol_instruct":
        return run_evol_round(teacher, state.pool, weights, g, round_idx, seed, rng)
    return run_dynosaur_round(teacher, state.meta, state.seen, g, round_idx, seed, rng)


def task_universe(g: GenerationConfig, pool: dict[str, list[PoolItem]], rows: list[dict]) -> list[str]:
    """The tasks weights are kept over: the pool's for steered methods, else whatever labels the rows carry."""
    if g.method in STEERED:
        return list(pool)
    return sorted({r["task"] for r in rows})
