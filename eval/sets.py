"""Fixed eval sets a user brings: rows with task, instruction, input and output, e.g. human-written questions about
their documents. Read once at the start of a run and copied into the run folder, so a resumed run scores the same
rows; never trained on.
"""
from __future__ import annotations

import json
from pathlib import Path

FIELDS = ("task", "instruction", "output")


class EvalSetError(ValueError):
    """An eval set that cannot be used; the message names the file, the row and the fix."""


def load_eval_set(spec: str, name: str) -> list[dict]:
    """Rows {id, task, instruction, input, output} from a .jsonl file or a `datasets` save_to_disk folder. name is the
    config field (for messages): every problem is reported at once, by row number."""
    p = Path(spec).expanduser()
    if p.is_file():
        raw, problems = [], []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    raw.append(json.loads(line))
                except json.JSONDecodeError as e:
                    problems.append(f"line {n}: not JSON ({e.msg})")
        if problems:
            raise EvalSetError(_listed(name, spec, problems))
    elif p.is_dir():
        import datasets

        raw = [dict(r) for r in datasets.load_from_disk(str(p))]
    else:
        raise EvalSetError(f"{name}={spec}: not found; give a .jsonl file or a `datasets` folder of rows with task, instruction, input, output")
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
