"""Fixed eval sets a user brings: rows with task, instruction, input and output, e.g. human-written questions about
their documents. Read once at the start of a run (by loop/evalsets.py, in any format the corpus takes) and copied
into the run folder, so a resumed run scores the same rows; never trained on.
"""
from __future__ import annotations

FIELDS = ("task", "instruction", "output")


class EvalSetError(ValueError):
    """An eval set that cannot be used; the message names the file, the row and the fix."""


def eval_set_rows(raw: list, spec: str, name: str) -> list[dict]:
    """Rows {id, task, instruction, input, output} of an eval set's raw rows (loop/evalsets.py reads the file or dataset).
    spec names the source and name the config field (for messages): every problem is reported at once, by row number."""
    rows, problems = [], []
    for n, r in enumerate(raw, 1):
        missing = [f for f in FIELDS if not isinstance(r, dict) or not str(r.get(f) or "").strip()]
        if missing:
            problems.append(f"row {n} lacks {', '.join(missing)}")
            continue
        rows.append({"id": str(r.get("id") or f"{name.rsplit('.', 1)[-1]}-{n}"), "task": str(r["task"]).strip(),
                     "instruction": str(r["instruction"]).strip(), "input": str(r.get("input") or "").strip(), "output": str(r["output"]).strip(),
                     **{k: str(r[k]) for k in ("context", "chunk_id") if r.get(k)}})  # DAIG-built: its chunk (open-book eval) and id
    if problems:
        raise EvalSetError(_listed(name, spec, problems) + ": every row needs non-empty task, instruction and output")
    if not rows:
        raise EvalSetError(f"{name}={spec}: no rows; give at least one row per task you want scored")
    if len({r["id"] for r in rows}) != len(rows):
        raise EvalSetError(f"{name}={spec}: duplicate ids; make every 'id' unique or leave ids out")
    return rows


def _listed(name: str, spec: str, problems: list[str]) -> str:
    """One line naming the field, the file and up to five of its problems."""
    return f"{name}={spec}: " + "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
