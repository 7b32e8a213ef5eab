"""Fixed validation and test sets made by DAIG before round 1, from chunks that training never sees.

The sets are built once (uniform task weights, a seed of their own, the same grounding gates as training rows),
written to OUT/eval/ and read back on resume, so every round is scored on the same rows. Held-out chunks
(eval.heldout_chunks of the corpus, picked with eval.set_seed) never reach a training request; 0 builds the sets
from the training chunks ("same chunks" studies).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

from generation.config import GenerationConfig
from eval.evaluate import BUILTIN_BENCHMARK, benchmark_rows
from eval.sets import eval_set_rows
from generation.data.corpus import Chunk, read_rows
from generation.methods.daig import plan_requests, run_daig_round
from generation.data.pool import PoolItem
from generation.rows import chunk_id

log = logging.getLogger("daig")
MAX_PASSES = 3  # teacher passes over the held-out chunks before a short task is accepted as short


def load_eval_set(spec: str, name: str, split: str, hub: dict | None = None) -> list[dict]:
    """A user's eval set (eval.validation_path / eval.test_path): a .jsonl, .json, .csv or .parquet file, a `datasets`
    folder or a Hub id (its `split`; hub: load_dataset options), checked row by row (eval.sets)."""
    return eval_set_rows(read_rows(spec, split, hub), spec, name)


def load_benchmark(path: str, size: int, hub: dict | None = None) -> list[dict]:
    """eval.benchmark_path as prompt/completion rows: 'builtin' (Self-Instruct's 252 user-oriented tasks), a file, a
    `datasets` folder or a Hub id (its test split)."""
    return benchmark_rows(read_rows(str(BUILTIN_BENCHMARK) if path == "builtin" else path, "test", hub), size)


def heldout_chunk_ids(chunks: list[Chunk], share: float, seed: int) -> list[str]:
    """A seeded share of the chunks, at least one when share > 0 and there are two or more; sorted."""
    if share <= 0 or len(chunks) < 2:
        return []
    n = min(len(chunks) - 1, max(1, round(share * len(chunks))))
    return sorted(c.id for c in random.Random(seed).sample(chunks, n))


def build_daig_sets(teacher, g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list[Chunk], per_task: dict[str, int],
                    seed: int, closed_book: bool) -> tuple[dict[str, list[dict]], dict]:
    """{'validation': rows, 'test': rows} with per_task[name] rows of every pool task where the teacher gives that
    many, and what it took. With both sets asked for and two or more chunks, validation and test come from disjoint
    halves of the chunks (a seeded split), so passages that steer the run are not the ones it is reported on. Rows
    are DAIG rows (provenance, filters, ...) with new ids and their chunk_id on top, as eval/sets.py reads it."""
    wanted = [name for name in ("validation", "test") if per_task.get(name)]
    order = random.Random(seed).sample(chunks, len(chunks))
    halves = {"validation": order[: len(order) // 2], "test": order[len(order) // 2:]} if len(wanted) == 2 and len(chunks) >= 2 else {}
    sets: dict[str, list[dict]] = {"validation": [], "test": []}
    info = {"requests": 0, "short_tasks": {}}
    for k, name in enumerate(wanted):
        rows, requests, short = gather(teacher, g, pool, halves.get(name, chunks), per_task[name], seed + 100 * k, closed_book)
        sets[name] = [{**r, "id": f"{name}-{r['task']}-{i:03d}", "split": name, "chunk_id": chunk_id(r)} for i, r in enumerate(rows)]
        info["requests"] += requests
        if short:
            info["short_tasks"][name] = short
            log.warning("eval sets: the teacher gave fewer than %d %s rows for %s after %d passes; those tasks are scored on fewer",
                        per_task[name], name, short, MAX_PASSES)
    return sets, info


def gather(teacher, g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list[Chunk], need: int, seed: int,
           closed_book: bool) -> tuple[list[dict], int, dict[str, int]]:
    """Up to `need` kept DAIG rows per pool task from these chunks, in up to MAX_PASSES teacher passes over the
    tasks still short: (rows grouped by task, requests sent, tasks left short with their counts)."""
    tasks = list(pool)
    gathered: dict[str, list[dict]] = {t: [] for t in tasks}
    requests = 0
    for n in range(MAX_PASSES):
        short = [t for t in tasks if len(gathered[t]) < need]
        if not short:
            break
        weights = {t: (1.0 / len(short) if t in short else 0.0) for t in tasks}
        # about twice the rows still missing: half of DAIG's requests are rejected on an unseen corpus (LOG.md)
        missing = sum(need - len(gathered[t]) for t in short)
        g_n = dataclasses.replace(g, daig=dataclasses.replace(g.daig, examples_per_round=max(len(short), 2 * missing)))
        plan = plan_requests(weights, pool, chunks, g_n, random.Random(seed + n))
        kept, _, _ = run_daig_round(teacher, plan, g_n, 0, seed + n, None, None, closed_book, tuple(tasks))
        requests += len(plan)
        for row in kept:
            if len(gathered[row["task"]]) < need:
                gathered[row["task"]].append(row)
    return [r for t in tasks for r in gathered[t]], requests, {t: len(gathered[t]) for t in tasks if len(gathered[t]) < need}


def write_heldout(path: Path, ids: list[str], share: float, seed: int, writer) -> None:
    writer(path, json.dumps({"heldout_chunks": share, "set_seed": seed, "chunk_ids": ids}, indent=1))


def read_heldout(path: Path) -> list[str]:
    return json.loads(path.read_text(encoding="utf-8"))["chunk_ids"] if path.exists() else []
