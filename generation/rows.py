"""One schema for the rows every generation method writes, kept and rejected alike, and what every method shares
about them: the round's counts, the request seed, the teacher-failure reason.

A row (rounds/<r>/data.jsonl, rejected.jsonl):
    id, round, method, task, teacher_model
    requests     {stage: cache key of the teacher request}: trace finds each reply in the cache by these
    provenance   where the row came from: example_ids (pool examples shown), chunk_id, heading (the domain chunk),
                 parent_id (the pool item evolved), and each method's own details (prompt, operator, dataset, ...)
    filters      [{filter, kept, reason, ...}]: every decision, in order
    instruction, input, output (kept rows; rejected rows have what was written before they failed)
    context      the chunk text the student may see (DAIG)
    stage, reason, raw   rejected rows only: where and why it failed, and the teacher's text
Trace, feedback and coverage read rows through chunk_id() and pool_ids(); upgrade() reads a row written before
this schema (DAIG's request keys and provenance sat at the top level).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundStats:
    """Candidates and rejections; what the teacher cost is the teacher ledger's business."""
    requests: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    chunks: int = 0  # distinct chunks this round's requests were about
    documents: int = 0  # distinct documents (pages) those chunks came from

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def new_row(row_id: str, round_idx: int, method: str, task: str, teacher_model: str, requests: dict | None = None,
            provenance: dict | None = None) -> dict:
    """The head every row starts from; stages add instruction, input, output, context, filters."""
    return {"id": row_id, "round": round_idx, "method": method, "task": task, "teacher_model": teacher_model,
            "requests": dict(requests or {}), "provenance": dict(provenance or {}), "filters": []}


def rejected_row(row: dict, stage: str, reason: str, raw: str = "", **fields) -> dict:
    """A rejected copy of `row`: the stage it failed at, why, and the teacher text it failed on."""
    return {**row, **fields, "stage": stage, "reason": reason, "raw": raw}


def request_seed(seed: int, round_idx: int) -> int:
    """The first sampling seed of a round's requests (request i gets this + i): distinct per run seed and round, so a
    resumed or repeated round asks the same requests and the cache answers them."""
    return seed * 100003 + round_idx * 1009


def teacher_failure(reply) -> str:
    """The rejection reason of a reply that came back as an error ('' when it did not)."""
    return f"teacher_{reply.error}" if reply.error else ""


def chunk_id(row: dict) -> str | None:
    """The domain chunk a row is about (None for methods without documents)."""
    return (row.get("provenance") or {}).get("chunk_id")


def pool_ids(row: dict) -> list[str]:
    """The pool items a row was generated from: the examples shown, or the item evolved; [] when none."""
    p = row.get("provenance") or {}
    return list(p.get("example_ids") or []) + ([p["parent_id"]] if p.get("parent_id") else [])


_DAIG_TOP_LEVEL = {"instruction_request": ("requests", "instruction"), "answer_request": ("requests", "answer"),
                   "example_ids": ("provenance", "example_ids"), "chunk_id": ("provenance", "chunk_id"),
                   "heading": ("provenance", "heading"), "requested_task": ("provenance", "requested_task")}


def upgrade(row: dict) -> dict:
    """A row written before this schema, in it (rows already in it come back unchanged)."""
    if not any(k in row for k in _DAIG_TOP_LEVEL):
        return row
    new = {k: v for k, v in row.items() if k not in _DAIG_TOP_LEVEL}
    new["requests"], new["provenance"] = dict(row.get("requests") or {}), dict(row.get("provenance") or {})
    for old, (part, key) in _DAIG_TOP_LEVEL.items():
        if old in row:
            new[part][key] = row[old]
    return new
