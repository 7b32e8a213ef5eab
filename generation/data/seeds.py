"""Seed tasks for Self-Instruct and Alpaca: the human-written starting pool.

Accepted: the Self-Instruct format (.jsonl rows with id, name, instruction, instances [{input, output}],
is_classification; e.g. Self-Instruct's 175 seed_tasks.jsonl), our pool format (.jsonl rows with task,
instruction, input, output; see generation/data/pool.py), or a `datasets` name/folder whose rows are either.
Each row's format is read from its keys: a row with 'instances' is Self-Instruct format, any other row is
pool format (is_classification then defaults to task == 'classification').
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from generation.data.corpus import DataError, read_rows
from generation.data.pool import PoolItem
from generation.filters.novelty import NoveltyFilter, novelty_json, restore_novelty


@dataclass(frozen=True)
class SeedTask:
    id: str
    name: str
    instruction: str
    instances: list[dict]  # [{"input": str, "output": str}, ...]; Alpaca shows the first
    is_classification: bool


BUILTIN_SEEDS = Path(__file__).parent / "self_instruct_seed_tasks.jsonl"  # the 175 published ones (data/README.md)


def load_seed_tasks(spec: str, split: str = "train", hub: dict | None = None) -> list[SeedTask]:
    """Seed tasks: 'builtin' (Self-Instruct's 175), a .jsonl, .json, .csv or .parquet file, or a `datasets` name/folder; a bad row raises
    DataError naming it and the fix."""
    path = BUILTIN_SEEDS if spec == "builtin" else Path(spec).expanduser()
    rows, name = read_rows(str(path), split, hub), path.name
    seeds = [_seed_from_row(row, f"{name} row {n}", f"seed-{n}") for n, row in enumerate(rows, 1)]
    if not seeds:
        raise DataError(f"seed tasks {spec}: no rows; point seed_tasks at a file with tasks")
    ids = [s.id for s in seeds]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{name}: duplicate seed task id {dup!r}; make every 'id' unique")
    return seeds


def seeds_from_pool(items: list[PoolItem]) -> list[SeedTask]:
    """The run's pool items as seed tasks (seed_tasks: ''); a pool task named 'classification' counts as one."""
    return [SeedTask(item.id, item.task, item.instruction, [{"input": item.input, "output": item.output}],
                     item.task == "classification") for item in items]


def _seed_from_row(row, where: str, default_id: str) -> SeedTask:
    if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
        raise DataError(f"{where}: needs a non-empty string 'instruction'; fix the seed tasks file")
    is_clf = row.get("is_classification", row.get("task") == "classification")
    if not isinstance(is_clf, bool):
        raise DataError(f"{where}: 'is_classification' must be true or false, got {is_clf!r}")
    if "instances" in row:  # Self-Instruct format
        instances = row["instances"]
        if not isinstance(instances, list) or not instances or not all(
                isinstance(i, dict) and isinstance(i.get("input"), str) and isinstance(i.get("output"), str) for i in instances):
            raise DataError(f"{where}: 'instances' must be a non-empty list of {{\"input\": str, \"output\": str}}; fix that row")
        name = str(row.get("name") or row.get("task") or "")
        # The instruction is kept as written: the reference prompts and scores novelty with the raw seed text.
        instances = [{"input": i["input"], "output": i["output"]} for i in instances]
        return SeedTask(str(row.get("id") or default_id), name, row["instruction"], instances, is_clf)
    if not str(row.get("task") or "").strip():
        raise DataError(f"{where}: a pool-format row needs 'task' (or give Self-Instruct 'instances'); fix that row")
    instance = {"input": str(row.get("input") or ""), "output": str(row.get("output") or "")}
    return SeedTask(str(row.get("id") or default_id), str(row["task"]).strip(), row["instruction"].strip(), [instance], is_clf)


@dataclass
class SeedState:
    """What a seed-bootstrapping method (Self-Instruct, Alpaca) carries from round to round."""
    seeds: list[SeedTask]
    machine: list[str]  # machine-written instructions kept so far
    novelty: NoveltyFilter
    embedder: object = None  # an Embedder for sedi's embedding distance, or None (ROUGE-L)
    novelty_base: int = 0  # texts the start put in the novelty pool (a checkpoint keeps only those added later)

    def to_json(self) -> dict:
        return {"machine": self.machine, **novelty_json(self.novelty, self.novelty_base)}

    def restore(self, saved: dict) -> None:
        """Lay a checkpoint's to_json() over this freshly started state."""
        self.machine = list(saved["machine"])
        restore_novelty(self.novelty, saved)


def start_from_seeds(seed_tasks: str, seed_split: str, pool: dict[str, list[PoolItem]], novelty: NoveltyFilter,
                     load_embedder: Callable, shown: Callable[[SeedTask], bool] = lambda s: True, hub: dict | None = None) -> SeedState:
    """The seed tasks (seed_tasks; '' takes them from the pools; hub: load_dataset options for a Hub id); the novelty
    pool starts with the seeds shown."""
    seeds = load_seed_tasks(seed_tasks, seed_split, hub) if seed_tasks else seeds_from_pool([item for items in pool.values() for item in items])
    novelty.add([s.instruction for s in seeds if shown(s)])
    return SeedState(seeds, [], novelty, load_embedder(), len(novelty.texts))
