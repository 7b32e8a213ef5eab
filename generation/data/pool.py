"""The task pool: example instructions, each with a task name, from general and domain sources.

A row needs 'task' and 'instruction'; 'id', 'input' and 'output' are optional. Sampling draws the task
by the current weights, then k examples of that task, each from the domain pool with probability
domain_share (when the task has examples of both kinds).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from generation.config import PoolFields
from generation.data.corpus import DataError, read_rows

BUILTIN_GENERAL_POOL = Path(__file__).parent / "general_tasks.jsonl"


@dataclass(frozen=True)
class PoolItem:
    id: str
    task: str
    instruction: str
    input: str
    output: str
    kind: str  # "domain" or "general"


@dataclass(frozen=True)
class EvolvedItem(PoolItem):
    """A pool item Evol-Instruct made; depth counts the evolutions from the original pool instruction."""
    depth: int = 1


def pool_refs(pool: dict[str, list[PoolItem]]) -> dict[str, list]:
    """The pool as a checkpoint keeps it: each item by reference ([kind, id]: ids are unique within a kind only), or in
    full when the run made it (evolved items, which no file holds)."""
    return {t: [{"evolved": asdict(item)} if isinstance(item, EvolvedItem) else [item.kind, item.id] for item in items]
            for t, items in pool.items()}


def pool_from_refs(refs: dict[str, list], pool: dict[str, list[PoolItem]]) -> dict[str, list[PoolItem]]:
    """The pool pool_refs describes, its referenced items taken from `pool` (the one the config's files give)."""
    by_ref = {(item.kind, item.id): item for items in pool.values() for item in items}
    return {t: [EvolvedItem(**ref["evolved"]) if isinstance(ref, dict) else by_ref[tuple(ref)] for ref in items]
            for t, items in refs.items()}


def load_pool(spec: str, kind: str, split: str = "train", fields: dict | None = None, hub: dict | None = None) -> list[PoolItem]:
    """Load one pool: 'builtin', a .jsonl, .json, .csv or .parquet file, or a `datasets` name/folder. '' gives an empty pool.
    fields: which column holds what (PoolFields as a dict; default the names themselves); hub: load_dataset options."""
    if not spec:
        return []
    path = BUILTIN_GENERAL_POOL if spec == "builtin" else Path(spec).expanduser()
    rows, name = read_rows(str(path), split, hub), path.name
    col = {**DEFAULT_FIELDS, **(fields or {})}
    _check_columns(rows, col, name, kind)
    items = []
    for n, row in enumerate(rows, 1):
        task = str(row.get(col["task"]) or "").strip() if col["task"] else col["default_task"]
        instruction = str(row.get(col["instruction"]) or "").strip()
        if not instruction or not task:
            raise DataError(f"{name} row {n}: needs a non-empty task ({col['task']!r}) and instruction ({col['instruction']!r}); "
                            f"fix the {kind} pool or generation.{kind}_pool_fields")
        items.append(PoolItem(id=str(row.get(col["id"]) or f"{kind}-{n}"), task=task, instruction=instruction,
                              input=str(row.get(col["input"]) or "").strip() if col["input"] else "",
                              output=str(row.get(col["output"]) or "").strip() if col["output"] else "", kind=kind))
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"{name}: duplicate ids in the {kind} pool; make every {col['id']!r} unique")
    return items


DEFAULT_FIELDS = asdict(PoolFields())  # the column names when a pool maps none


def _check_columns(rows: list[dict], col: dict, name: str, kind: str) -> None:
    """A mapped column the rows lack is one line listing the columns. The default names of the optional ones (input,
    output, id) may be absent; a name the user chose may not."""
    if not rows:
        return
    columns = list(dict.fromkeys(k for r in rows[:100] for k in r))
    missing = [f"{key}={col[key]!r}" for key in ("task", "instruction", "input", "output", "id")
               if col[key] and col[key] not in columns and (key in ("task", "instruction") or col[key] != DEFAULT_FIELDS[key])]
    if missing:
        raise DataError(f"{name}: the {kind} pool has no column {', '.join(missing)} (columns: {', '.join(map(str, columns))}); "
                        f"set generation.{kind}_pool_fields")


def load_pools(g) -> dict[str, list[PoolItem]]:
    """The run's task pool from its GenerationConfig: both pools with their columns and Hub options, then g.tasks."""
    def one(spec, kind, fields):
        return load_pool(spec, kind, g.pool_split, asdict(fields), g.datasets.get(spec))

    return build_pool(one(g.general_pool, "general", g.general_pool_fields), one(g.domain_pool, "domain", g.domain_pool_fields), g.tasks)


def build_pool(general: list[PoolItem], domain: list[PoolItem], tasks: list[str]) -> dict[str, list[PoolItem]]:
    """Group items by task; restrict to `tasks` when given (each must exist)."""
    by_task: dict[str, list[PoolItem]] = {}
    for item in general + domain:
        by_task.setdefault(item.task, []).append(item)
    if tasks:
        missing = [t for t in tasks if t not in by_task]
        if missing:
            raise DataError(f"generation.tasks names {missing} but the pools only have {sorted(by_task)}; fix generation.tasks")
        by_task = {t: by_task[t] for t in tasks}
    if not by_task:
        raise DataError("the task pool is empty; set generation.general_pool: builtin or give a domain_pool")
    return dict(sorted(by_task.items()))


def sample_task(weights: dict[str, float], rng: random.Random) -> str:
    tasks = sorted(weights)
    return rng.choices(tasks, weights=[weights[t] for t in tasks], k=1)[0]


def sample_examples(items: list[PoolItem], k: int, domain_share: float, rng: random.Random) -> list[PoolItem]:
    """k distinct examples of one task; each slot prefers the domain kind with probability domain_share."""
    left = {"domain": [i for i in items if i.kind == "domain"], "general": [i for i in items if i.kind == "general"]}
    chosen = []
    for _ in range(min(k, len(items))):
        kind = "domain" if rng.random() < domain_share else "general"
        if not left[kind]:
            kind = "general" if kind == "domain" else "domain"
        chosen.append(left[kind].pop(rng.randrange(len(left[kind]))))
    return chosen
