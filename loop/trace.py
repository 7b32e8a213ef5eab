"""`daig trace RUN_DIR EXAMPLE_ID`: the lineage of one generated row, kept or rejected.

Run: daig trace runs/quickstart r1-00006 [--json]

From the row and the run's own files: what was sampled (pool examples for DAIG, the method's provenance otherwise),
the domain chunk, each teacher request with its cached reply, every filter decision, and the eval loss of the row's
task in its round and every later one. Pools and corpus are re-read from the paths in config.yaml, so a pool or
corpus edited since the run shows as "not found" rather than as wrong text.
"""
from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path


from generation.teacher.cache import CacheError, peek_replies
from generation.data.corpus import DataError, load_corpus
from generation.data.pool import load_pool
from generation.rows import chunk_id, upgrade
from loop.runfolder import METRICS, read_config, read_jsonl, round_dir, round_numbers

log = logging.getLogger("daig")


class TraceError(LookupError):
    """The id is not in the run; the message suggests the closest ids."""


def find_row(run: Path, example_id: str) -> tuple[dict, bool]:
    """The row with this id and whether it was kept; searches every round's data.jsonl and rejected.jsonl."""
    ids = []
    for r in round_numbers(run):
        for name, kept in (("data.jsonl", True), ("rejected.jsonl", False)):
            for row in read_jsonl(round_dir(run, r) / name):
                if row.get("id") == example_id:
                    return upgrade(row), kept
                ids.append(str(row.get("id")))
    close = difflib.get_close_matches(example_id, ids, n=5, cutoff=0.5)
    hint = f"closest ids: {', '.join(close)}" if close else f"ids look like {ids[0]}" if ids else "the run has no rows yet"
    raise TraceError(f"no row with id {example_id!r} in {run} (kept or rejected); {hint}")


def pool_examples(example_ids: list[str], g: dict) -> list[dict]:
    """The sampled pool examples, looked up in the pools the run's config (generation section) names."""
    try:
        items = {i.id: i for kind in ("general", "domain")
                 for i in load_pool(g.get(f"{kind}_pool", ""), kind, g.get("pool_split", "train"), g.get(f"{kind}_pool_fields"),
                                    (g.get("datasets") or {}).get(g.get(f"{kind}_pool", "")))}
    except DataError as e:
        return [{"id": eid, "missing": f"pools unreadable: {e}"} for eid in example_ids]
    out = []
    for eid in example_ids:
        item = items.get(eid)
        out.append({"id": eid, "kind": item.kind, "task": item.task, "instruction": item.instruction, "input": item.input,
                    "output": item.output} if item else {"id": eid, "missing": "not in the pools named by config.yaml now"})
    return out


def find_chunk(chunk_id: str, g: dict) -> str | None:
    """Re-chunk the corpus with the run's settings (its config's generation section); chunk ids are stable while the
    source text is unchanged."""
    path, chunk_words = g.get("domain_path", ""), g.get("chunk_words", 0)
    if not path or not chunk_words:
        return None
    chunks = load_corpus(path, chunk_words, g.get("domain_split", "train"), g.get("domain_text_field", "text"), (g.get("datasets") or {}).get(path))
    return next((c.text for c in chunks if c.id == chunk_id), None)


def cached_replies(cache_path: str, keys: list[str]) -> dict[str, str]:
    """Reply text per request key from the teacher cache, read-only (tracing never writes it)."""
    try:
        return {k: r.text for k, r in peek_replies(cache_path, keys).items()}
    except CacheError as e:  # e.g. a WAL file another user owns: the lineage is still worth printing
        log.warning("%s; replies are left out", e)
        return {}


def later_losses(metrics: list[dict], task: str, round_idx: int) -> list[dict]:
    return [{"round": m.get("round"), "task_eval_loss": (m.get("task_eval_loss") or {}).get(task),
             "task_weight": (m.get("task_weights") or {}).get(task), "next_task_weight": (m.get("next_task_weights") or {}).get(task)}
            for m in metrics if m.get("round", 0) >= round_idx]


def trace(run_dir: str | Path, example_id: str) -> dict:
    """The lineage of one row as plain data (what `--json` prints)."""
    run = Path(run_dir)
    if not (run / "rounds").is_dir():
        raise FileNotFoundError(f"{run} has no rounds/ folder; give a run folder written by `daig run --out`")
    row, kept = find_row(run, example_id)
    config = read_config(run)
    g = config.get("generation") or {}

    requests = dict(row.get("requests") or {})
    chunk_ref, example_ids = chunk_id(row), (row.get("provenance") or {}).get("example_ids")
    replies = cached_replies((g.get("teacher") or {}).get("cache_path", ""), list(requests.values()))
    chunk = row.get("context") or None
    chunk_source = "row context" if chunk else ""
    if not chunk and chunk_ref:
        try:
            chunk = find_chunk(chunk_ref, g)
            chunk_source = "re-chunked corpus" if chunk else "not found in the corpus named by config.yaml now"
        except DataError as e:
            chunk_source = f"corpus unreadable: {e}"
    return {
        "id": row.get("id"), "kept": kept, "round": row.get("round"), "method": row.get("method", g.get("method", "daig")),
        "task": row.get("task"), "split": row.get("split"),
        "instruction": row.get("instruction"), "input": row.get("input"), "output": row.get("output"),
        "reason": row.get("reason"), "stage": row.get("stage"), "raw": row.get("raw"),
        "pool_examples": pool_examples(example_ids, g)
        if example_ids else [],
        "provenance": row.get("provenance") or {},
        "chunk_id": chunk_ref, "chunk": chunk, "chunk_source": chunk_source,
        "teacher_model": row.get("teacher_model"),
        "requests": [{"stage": stage, "key": key, "cached_reply": replies.get(key)} for stage, key in requests.items()],
        "cache": (g.get("teacher") or {}).get("cache_path", ""),
        "filters": row.get("filters") or [],
        "task_losses": later_losses(read_jsonl(run / METRICS), row["task"], row.get("round", 0)) if row.get("task") else [],
    }


def format_trace(t: dict) -> str:
    """The lineage as readable text, section by section."""
    status = "kept" + (f" ({t['split']} split)" if t.get("split") else "") if t["kept"] else f"rejected at {t['stage']}: {t['reason']}"
    out = [f"{t['id']}: round {t['round']}, method {t['method']}, task {t['task'] or '(none)'}, {status}", ""]
    out += _block("instruction", t.get("instruction")) + _block("input", t.get("input")) + _block("output", t.get("output"))
    if not t["kept"]:
        out += _block("raw teacher text", t.get("raw"))
    if t["pool_examples"]:
        out.append("sampled pool examples:")
        for e in t["pool_examples"]:
            out.append(f"  - {e['id']}: {e['missing']}" if "missing" in e else f"  - {e['id']} ({e['kind']}, {e['task']}): {e['instruction']}")
    if t["provenance"]:
        out.append("provenance:")
        out += [f"  {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in t["provenance"].items()]
    if t.get("chunk_id") or t.get("chunk"):
        out.append(f"domain chunk {t.get('chunk_id') or ''} ({t['chunk_source']}):")
        out += _indent(t.get("chunk") or "")
    out.append(f"teacher requests ({t['teacher_model']}; cache {t['cache'] or 'not configured'}):")
    for r in t["requests"]:
        out.append(f"  {r['stage']}: {r['key']}")
        out += _indent("(no cached reply)" if r["cached_reply"] is None else r["cached_reply"], "      ")
    out.append("filter decisions:")
    filters = t["filters"]
    if isinstance(filters, dict):  # older runs: one flat dict of scores
        filters = [{"filter": k, "score": v} for k, v in filters.items()]
    for d in filters:
        verdict = "" if "kept" not in d else "kept" if d["kept"] else f"rejected ({d.get('reason')})"
        extra = {k: v for k, v in d.items() if k not in ("filter", "kept", "reason", "top_similar")}
        out.append("  " + " ".join([f"{d.get('filter')}:"] + [verdict] * bool(verdict) + [json.dumps(extra, ensure_ascii=False)] * bool(extra)))
        for text, score in (d.get("top_similar") or [])[:3]:
            out.append(f"      similar {score:.3f}: {text}")
    if not t["task"]:
        out.append("eval loss: none, the row has no task label (rejected before it was labelled)")
        return "\n".join(out)
    out.append(f"eval loss of task {t['task']!r} from round {t['round']} on:")
    for x in t["task_losses"]:
        loss = "n/a (no held-out rows)" if x["task_eval_loss"] is None else f"{x['task_eval_loss']:.4f}"
        weight = "" if x["task_weight"] is None else f", sampled with weight {x['task_weight']:.3f}"
        out.append(f"  round {x['round']}: {loss}{weight}")
    if not t["task_losses"]:
        out.append("  (no finished round yet)")
    return "\n".join(out)


def _block(name: str, text) -> list[str]:
    return [f"{name}:"] + _indent(text) if text else []


def _indent(text: str, pad: str = "    ") -> list[str]:
    return [pad + line for line in str(text).splitlines()] or [pad]
