"""The closed loop, top to bottom: generate -> filter -> split -> train -> evaluate -> reweight -> log.

Run: daig run configs/quickstart.yaml --out runs/qs
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from eval.evaluate import benchmark, evaluate, load_benchmark
from generation.corpus import load_corpus
from generation.pool import build_pool, load_pool
from generation.cache import Budget, CachedTeacher, Ledger, TeacherCache
from generation.teachers import LocalTeacher, OpenAITeacher, Teacher
from loop.config import ConfigError, RunConfig, to_dict
from loop.feedback import next_weights
from loop.methods import STEERED, generate_round, start_method, task_universe
from generation.llamacpp import LlamaCppServer
from loop.models import gguf_path, resolve_model
from loop.tracking import Tracker
from training.artifacts import data_hash, write_adapter_card
from training.sft import check_hardware, mix_rows, train_adapter, train_adapter_launched

log = logging.getLogger("daig")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def student_row(row: dict, include_context: bool) -> dict:
    """A kept example as a conversational prompt/completion row for trl and eval: [context,] instruction[, input]."""
    parts = [row.get("context", "") if include_context else "", row["instruction"], row.get("input", "")]
    prompt = "\n\n".join(p for p in parts if p)
    return {"id": row["id"], "task": row["task"], "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": row["output"]}]}


def split_per_task(rows: list[dict], fraction: float, min_heldout: int, rng: random.Random) -> None:
    """Mark each row 'train' or 'eval', per task, so every task with 2+ rows has held-out examples."""
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    for task_rows in by_task.values():
        n = len(task_rows)
        n_eval = 0 if n < 2 else min(n - 1, max(min_heldout, round(n * fraction)))
        held = set(rng.sample(range(n), n_eval))
        for i, r in enumerate(task_rows):
            r["split"] = "eval" if i in held else "train"


def make_teacher(cfg: RunConfig) -> CachedTeacher:
    t = cfg.generation.teacher
    if t.backend == "openai":
        teacher: Teacher = OpenAITeacher(t.model, t.base_url, t.api_key_env, t.max_concurrency, t.timeout_s, t.max_retries,
                                         t.rpm, t.tpm, t.backoff_s, t.max_backoff_s)
        teacher.check_reachable()
    elif t.backend == "llamacpp":
        server = LlamaCppServer(gguf_path(t.model, cfg.cache_dir), t.model, t.num_threads or cfg.num_threads, t.n_ctx)
        teacher = OpenAITeacher(t.model, server.base_url, "", t.max_concurrency, t.timeout_s, t.max_retries,
                                t.rpm, t.tpm, t.backoff_s, t.max_backoff_s, on_close=server.stop)
    else:
        teacher = LocalTeacher(resolve_model(t.model, cfg.cache_dir), t.model, t.batch_size, t.num_threads or cfg.num_threads)
    budget = Budget(t.max_teacher_calls, t.max_teacher_tokens, t.max_cost_usd, t.usd_per_m_prompt_tokens, t.usd_per_m_completion_tokens)
    return CachedTeacher(teacher, TeacherCache(t.cache_path) if t.cache_path else None, budget)


def ledger_metrics(led: Ledger, n_kept: int, prefix: str = "") -> dict:
    paid_tokens = led.prompt_tokens + led.completion_tokens
    return {f"{prefix}teacher_requests": led.requests, f"{prefix}teacher_calls": led.calls, f"{prefix}cache_hits": led.cache_hits,
            f"{prefix}teacher_retries": led.retries, f"{prefix}teacher_failures": dict(led.failures),
            f"{prefix}teacher_tokens": paid_tokens, f"{prefix}teacher_prompt_tokens": led.prompt_tokens,
            f"{prefix}teacher_completion_tokens": led.completion_tokens, f"{prefix}cost_usd": round(led.cost_usd, 6),
            f"{prefix}calls_per_kept": led.calls / n_kept if n_kept else None,
            f"{prefix}tokens_per_kept": paid_tokens / n_kept if n_kept else None}


def _num(x: float | None) -> float | None:
    """NaN (no data) becomes None, which JSON can hold."""
    return x if x is not None and math.isfinite(x) else None


def _finite(d: dict[str, float]) -> dict[str, float | None]:
    return {k: _num(v) for k, v in d.items()}


def train_round(cfg: RunConfig, student: str, rounds_rows: list[list[dict]], adapter: Path | None,
                rdir: Path, r: int, rng: random.Random) -> tuple[Path | None, dict]:
    """Train this round's adapter (restart fresh, or continue the last one) on the rows training.data_mix picks."""
    continuing = cfg.training.adapter_mode == "continue" and adapter is not None
    per_round = [[student_row(x, cfg.training.include_context) for x in rows if x["split"] == "train"] for rows in rounds_rows]
    train_rows = mix_rows(per_round, cfg.training, continuing, rng)
    init = adapter if continuing else None
    if not train_rows:
        log.warning("round %d kept no training examples; the adapter is not retrained this round", r)
        return adapter, {}
    tmp = Path(tempfile.mkdtemp(dir=rdir, prefix=".adapter."))
    train = train_adapter_launched if cfg.training.launcher == "accelerate" else train_adapter
    stats = train(student, train_rows, tmp, cfg.training, cfg.seed + r, cfg.num_threads, init_adapter=init, work_dir=rdir / ".trainer")
    shutil.rmtree(rdir / ".trainer", ignore_errors=True)
    stats["data_sha256"], stats["rows_trained"] = data_hash(train_rows), len(train_rows)
    os.replace(tmp, rdir / "adapter")
    return rdir / "adapter", stats


def eval_round(cfg: RunConfig, student: str, adapter: Path | None, all_rows: list[dict], bench_rows: list[dict], r: int) -> dict:
    """Per-task loss on every held-out row so far with this round's adapter; the benchmark with the same model load."""
    rows = [student_row(x, cfg.training.include_context) for x in all_rows if x["split"] == "eval"]
    bench_rows = bench_rows if adapter else []  # the base model was scored once at the start
    if not rows and not bench_rows:
        return {"task_eval_loss": {}, "samples": [], "eval_loss": math.nan, "sample_rouge_l": math.nan, "generation_metrics": {},
                "benchmark": None, "seconds": 0}
    return evaluate(student, str(adapter) if adapter else None, rows, cfg.eval, cfg.training.max_length, cfg.num_threads,
                    desc=f"round {r} eval", bench_rows=bench_rows)


def run(cfg: RunConfig, out_dir: str | Path) -> list[dict]:
    """Run every round; returns the per-round metrics (also in out_dir/metrics.jsonl)."""
    out = Path(out_dir)
    if (out / "metrics.jsonl").exists():
        raise FileExistsError(f"{out} already holds a run (metrics.jsonl); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    config_dict = to_dict(cfg)
    write_atomic(out / "config.yaml", yaml.safe_dump(config_dict, sort_keys=False))

    # Data first: bad input fails in seconds, before any model loads.
    g = cfg.generation
    chunks = load_corpus(g.domain_path, g.chunk_words, g.domain_split, g.domain_text_field) if g.domain_path else []
    pool = build_pool(load_pool(g.general_pool, "general", g.pool_split), load_pool(g.domain_pool, "domain", g.pool_split), g.tasks)
    log.info("method %s; corpus: %d chunks; pool: %s", g.method, len(chunks), ", ".join(f"{t} ({len(v)})" for t, v in pool.items()))
    if g.method in STEERED and cfg.feedback.policy == "loss_softmax" and cfg.feedback.floor * len(pool) >= 1:
        raise ConfigError(f"feedback.floor={cfg.feedback.floor} is too high for {len(pool)} tasks: set it below {1 / len(pool):.4f}")
    state = start_method(g, pool, chunks, cfg.cache_dir, cfg.num_threads)
    bench_rows = load_benchmark(cfg.eval.benchmark_path, cfg.eval.benchmark_size) if cfg.eval.benchmark_path else []

    check_hardware(cfg.training)
    teacher = make_teacher(cfg)
    student = resolve_model(cfg.student, cfg.cache_dir)
    tracker = Tracker(cfg.tracking, out, config_dict)
    base_bench = benchmark(student, None, bench_rows, cfg.eval.max_new_tokens, cfg.num_threads) if bench_rows else None
    if base_bench:
        write_jsonl(out / "benchmark_base.jsonl", base_bench["samples"])
        log.info("benchmark: base model ROUGE-L %.4f on %d tasks", base_bench["rouge_l"], len(bench_rows))
    rng = random.Random(cfg.seed)
    tasks = task_universe(g, pool, [])
    weights = {t: 1.0 / len(tasks) for t in tasks}
    all_rows: list[dict] = []
    rounds_rows: list[list[dict]] = []
    adapter: Path | None = None
    history = []
    loss_history: list[dict[str, float]] = []  # per-task eval loss of each finished round, for the feedback policy
    task_counts: dict[str, int] = {}
    try:
        for r in range(1, cfg.rounds + 1):
            start = time.time()
            rdir = out / "rounds" / str(r)
            before = teacher.ledger.copy()
            kept, rejected, stats = generate_round(teacher, state, g, weights, r, cfg.seed, rng)
            round_ledger = teacher.ledger.minus(before)
            split_per_task(kept, cfg.eval.heldout_fraction, cfg.eval.min_heldout_per_task, rng)
            write_jsonl(rdir / "data.jsonl", kept)
            write_jsonl(rdir / "rejected.jsonl", rejected)
            all_rows += kept
            gen_seconds = time.time() - start

            rounds_rows.append(kept)
            adapter, train_stats = train_round(cfg, student, rounds_rows, adapter, rdir, r, rng)
            ev = eval_round(cfg, student, adapter, all_rows, bench_rows, r)
            bench = ev["benchmark"]
            if bench:
                write_jsonl(rdir / "benchmark_samples.jsonl", bench["samples"])
            tasks = task_universe(g, pool, all_rows)
            weights = {t: weights.get(t, math.nan) for t in tasks}
            losses = {t: ev["task_eval_loss"].get(t, math.nan) for t in tasks}
            for x in kept:
                task_counts[x["task"]] = task_counts.get(x["task"], 0) + 1
            policy = cfg.feedback if g.method in STEERED else _logged_only(cfg.feedback, len(tasks))
            new_weights, evidence = next_weights(losses, policy, loss_history, task_counts)
            loss_history.append(losses)

            metrics = {
                "round": r,
                "task_weights": _finite(weights),
                "task_eval_loss": _finite(losses),
                "next_task_weights": _finite(new_weights),
                "feedback_evidence": _json_safe(evidence),
                "eval_loss": _num(ev["eval_loss"]),
                "sample_rouge_l": _num(ev["sample_rouge_l"]),
                "generation_metrics": ev["generation_metrics"],
                "benchmark_rouge_l": _num(bench["rouge_l"]) if bench else None,
                "benchmark_bleu": _num(bench["bleu"]) if bench else None,
                "benchmark_rouge_l_base": _num(base_bench["rouge_l"]) if base_bench else None,
                "benchmark_bleu_base": _num(base_bench["bleu"]) if base_bench else None,
                "n_generated": stats.requests,
                "n_kept": len(kept),
                "n_train": sum(x["split"] == "train" for x in kept),
                "n_eval": sum(x["split"] == "eval" for x in kept),
                "rejected": stats.rejected,
                **ledger_metrics(round_ledger, len(kept)),
                **ledger_metrics(teacher.ledger, len(all_rows), prefix="run_"),
                "budget_exhausted": teacher.exhausted or None,
                "train_loss": train_stats.get("train_loss"),
                "train_steps": train_stats.get("steps", 0),
                "adapter": str(adapter) if adapter else None,
                "generation_seconds": round(gen_seconds, 2),
                "train_seconds": train_stats.get("seconds", 0),
                "eval_seconds": ev["seconds"],
                "seconds": round(time.time() - start, 2),
            }
            table = [[r, t, _num(weights[t]), _num(losses[t]), new_weights[t]] for t in tasks]
            if train_stats:
                write_adapter_card(adapter, {"base_model": cfg.student, "round": r, "rows": train_stats["rows_trained"],
                                             "data_sha256": train_stats["data_sha256"],
                                             "train": {**to_dict(cfg.training), **{k: v for k, v in train_stats.items() if k != "loss_history"}},
                                             "metrics": {k: metrics[k] for k in ("task_eval_loss", "eval_loss", "sample_rouge_l")}})
            artifacts = [(f"data-round{r}", "dataset", rdir / "data.jsonl")] + ([(f"adapter-round{r}", "model", adapter)] if train_stats else [])
            tracker.log_round(metrics, table, ev["samples"], train_stats.get("loss_history", []), artifacts)
            write_jsonl(rdir / "eval_samples.jsonl", ev["samples"])
            history.append(metrics)
            log.info("round %d: kept %d/%d (rejected %s), teacher %d calls (%d cached), train loss %s, eval loss %s, %.0f s; next weights %s",
                     r, len(kept), stats.requests, stats.rejected or "none", round_ledger.calls, round_ledger.cache_hits,
                     _fmt(metrics["train_loss"]), _fmt(metrics["eval_loss"]), metrics["seconds"],
                     ", ".join(f"{t}={w:.2f}" for t, w in new_weights.items()))
            weights = new_weights
            if teacher.exhausted:
                log.warning("teacher budget reached (%s): stopping after round %d; everything so far is saved", teacher.exhausted, r)
                break
    finally:
        teacher.close()
        tracker.finish()
    return history


def _json_safe(x):
    """NaN and infinities (no data, untried) become None, recursively."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return _num(x) if isinstance(x, float) else x


def _logged_only(fb, n_tasks: int):
    """Unsteered methods may find more tasks than the floor allows; their weights are only logged, so cap the floor."""
    return dataclasses.replace(fb, floor=min(fb.floor, 0.5 / max(n_tasks, 1)))


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
