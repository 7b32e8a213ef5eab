"""Data quality of one generation round: how many kept rows are grounded in their chunk, by proxy and by reading.

Run: .venv/bin/python bench/data_quality.py --corpus tests/data/corpora/attrs_docs --requests 32 --out bench/.cache/dq/attrs
     [--config configs/quickstart.yaml] [--method daig] [-o generation.teacher.model=...] [--labels FILE]
     .venv/bin/python bench/data_quality.py --rows runs/x/rounds/1/data.jsonl --out DIR   (score rows made elsewhere)

One round of the method on the corpus, generation only (no training), uniform task weights, the builtin general
pool and no domain pool (what a new user has). Prints the kept rate, the share of kept rows that pass each
lexical grounding check (computed here, the same way for rows of any code version), teacher calls and seconds
per kept row, and the pages and chunks the requests touched. Writes kept.jsonl and reading.md (each kept row
beside its chunk) to --out for reading. The verdict is the reading: --labels FILE (JSONL of {"id", "grounded",
"correct", "self_contained"}) adds usable rows (all three true) and teacher calls and seconds per usable row.
The teacher cache is --out/teacher_cache.sqlite: the first run pays every call and records its seconds in
summary.json; a rerun with the same --out re-scores from the cache and reports the first run's seconds.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generation.filters.grounding import answer_support, instruction_grounding, refers_to_passage  # noqa: E402
from generation.rows import chunk_id  # noqa: E402

GROUNDING, SUPPORT = 0.5, 0.6  # the defaults of generation.grounding, fixed here so every code version is scored alike


def proxy_checks(row: dict) -> dict[str, bool]:
    """The lexical checks, on a kept row as written (context = its chunk)."""
    chunk = f"{row.get('heading', '')} {row.get('context', '')}"
    ins, inp = row["instruction"], row.get("input", "")
    support, numbers = answer_support(row["output"], f"{chunk} {ins} {inp}")
    return {"instruction_grounded": instruction_grounding(f"{ins} {inp}", chunk) >= GROUNDING,
            "answer_supported": support >= SUPPORT, "numbers_supported": not numbers,
            "self_contained": bool(inp) or not refers_to_passage(ins)}


def generate(args) -> tuple[list[dict], list[dict], dict]:
    from generation.data.corpus import load_corpus
    from generation.data.pool import build_pool, load_pool
    from loop.config import load_config
    from loop.controller import make_teacher
    from loop.methods import generate_round, start_method, task_universe

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(REPO / args.config, [f"generation.domain_path={Path(args.corpus).resolve()}", "generation.domain_pool=",
                                           "generation.general_pool=builtin", f"generation.method={args.method}",
                                           f"generation.daig.examples_per_round={args.requests}", "tracking.wandb=false",
                                           f"generation.teacher.cache_path={out / 'teacher_cache.sqlite'}", *args.override])
    g = cfg.generation
    chunks = load_corpus(g.domain_path, g.chunk_words, g.domain_split, g.domain_text_field)
    pool = build_pool(load_pool(g.general_pool, "general", g.pool_split), [], g.tasks)
    state = start_method(g, pool, chunks, cfg.cache_dir, cfg.num_threads)
    tasks = task_universe(g, pool, [])
    teacher = make_teacher(cfg)
    start = time.time()
    try:
        kept, rejected, stats = generate_round(teacher, state, g, {t: 1 / len(tasks) for t in tasks}, 1, args.seed, random.Random(args.seed))
    finally:
        teacher.close()
    seconds = time.time() - start
    led = teacher.ledger
    # --requests sets DAIG's requests per round; the baselines size their round with their own knobs (items,
    # tasks), so for them the candidates are the rows they kept and rejected.
    run = {"teacher": g.teacher.model, "backend": g.teacher.backend, "method": g.method, "requests": args.requests if g.method == "daig" else None,
           "teacher_requests": led.requests, "paid_calls": led.calls, "cache_hits": led.cache_hits, "seconds": round(seconds, 1),
           "rejected": stats.rejected, "chunks_total": len(chunks), "documents_total": len({c.source for c in chunks})}
    previous = out / "summary.json"
    if led.calls == 0 and previous.exists():  # a warm rerun: keep the seconds the calls really took
        run["seconds"] = json.loads(previous.read_text())["run"]["seconds"]
        run["seconds_from"] = "first run (cache warm now)"
    return kept, rejected, run


def summarize(kept: list[dict], rejected: list[dict], run: dict, labels: dict[str, dict]) -> dict:
    checks = {r["id"]: proxy_checks(r) for r in kept}
    names = ["instruction_grounded", "answer_supported", "numbers_supported", "self_contained"]
    rows = kept + rejected
    n = len(kept)
    summary = {"run": run, "kept": n, "candidates": run.get("requests") or len(rows), "kept_rate": n / max(1, run.get("requests") or len(rows)),
               "pass_share": {k: sum(c[k] for c in checks.values()) / n if n else None for k in names},
               "all_checks_pass": sum(all(c.values()) for c in checks.values()),
               "chunks_requested": len({chunk_id(r) for r in rows} - {None}),
               "documents_requested": len({chunk_id(r).rsplit("#", 1)[0] for r in rows if chunk_id(r)}),
               "chunks_kept": len({chunk_id(r) for r in kept} - {None})}
    calls = run.get("teacher_requests")
    summary["teacher_calls_per_kept"] = calls / n if calls and n else None
    if labels:
        read = [labels[r["id"]] for r in kept if r["id"] in labels]
        usable = sum(bool(x.get("grounded") and x.get("correct") and x.get("self_contained")) for x in read)
        summary["reading"] = {"read": len(read), "usable": usable, **{k: sum(bool(x.get(k)) for x in read) for k in ("grounded", "correct", "self_contained")},
                              "teacher_calls_per_usable": calls / usable if calls and usable else None,
                              "teacher_seconds_per_usable": run["seconds"] / usable if run.get("seconds") and usable else None,
                              "usable_per_hour": usable * 3600 / run["seconds"] if run.get("seconds") else None}
    return summary


def reading_sheet(kept: list[dict]) -> str:
    parts = []
    for r in kept:
        c = proxy_checks(r)
        parts.append(f"## {r['id']} [{r['task']}] chunk {chunk_id(r) or '-'} ({r['provenance'].get('heading', '')})\n"
                     f"checks: {', '.join(k for k, v in c.items() if not v) or 'all pass'}\n\n"
                     f"**Instruction:** {r['instruction']}\n\n" + (f"**Input:**\n```\n{r['input']}\n```\n\n" if r.get("input") and r.get("input") != r.get("context") else
                                                                   "**Input:** (the chunk)\n\n" if r.get("input") else "") +
                     f"**Output:** {r['output']}\n\n<details><summary>chunk</summary>\n\n```\n{r.get('context', '')}\n```\n</details>\n")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", help="domain documents (folder, .jsonl or dataset)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--config", default="configs/quickstart.yaml", help="base config (relative to the repo)")
    ap.add_argument("--method", default="daig")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--override", action="append", default=[], help="dotted config override, repeatable")
    ap.add_argument("--rows", help="score this data.jsonl instead of generating (its rejected.jsonl beside it is read too)")
    ap.add_argument("--labels", help="reading verdicts: JSONL of {id, grounded, correct, self_contained}")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    if args.rows:
        kept = [json.loads(x) for x in Path(args.rows).read_text().splitlines() if x.strip()]
        rej_path = Path(args.rows).with_name("rejected.jsonl")
        rejected = [json.loads(x) for x in rej_path.read_text().splitlines() if x.strip()] if rej_path.exists() else []
        prev = next((p for p in (out / "summary.json", Path(args.rows).with_name("summary.json")) if p.exists()), None)
        run = json.loads(prev.read_text())["run"] if prev else {"requests": len(kept) + len(rejected)}
        out.mkdir(parents=True, exist_ok=True)
    else:
        kept, rejected, run = generate(args)
    labels = {}
    if args.labels:
        labels = {x["id"]: x for x in map(json.loads, Path(args.labels).read_text().splitlines()) if x}
    summary = summarize(kept, rejected, run, labels)
    (out / "kept.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    (out / "rejected.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    (out / "reading.md").write_text(reading_sheet(kept))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
