"""The closed loop, top to bottom: generate -> filter -> split -> train -> evaluate -> reweight -> log.

Run: daig run configs/quickstart.yaml --out runs/quickstart
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterable
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path


from eval.evaluate import EvalResult, batch_for, benchmark, evaluate
from eval.judge import judge_prompt, judge_score, parse_verdict
from eval.stats import macro_mean, shrink
from eval.uncertainty import Uncertainty
from generation.data.corpus import DataError, load_corpus
from generation.data.pool import load_pools
from generation.rows import RoundStats, chunk_id
from generation.teacher.cache import Budget, CachedTeacher, Journal, Ledger, TeacherCache
from generation.teacher.backends import LocalTeacher, OpenAITeacher, Teacher, TeacherOptions, TeacherRequest
from generation.teacher.batch import BatchTeacher
from generation.filters.novelty import NoveltyFilter
from loop.runfolder import (CHECKPOINT, JOURNAL, LEGACY_CHECKPOINT, METRICS, LoopState, RowWriter, clean_stale, read_checkpoint, read_config,
                            round_dir, round_rows, run_rows, save_checkpoint, save_config, state_from_json, write_atomic, write_jsonl)
from loop.config import ConfigError, RunConfig, build, to_dict
from loop.evalsets import build_daig_sets, heldout_chunk_ids, load_benchmark, load_eval_set, read_heldout, write_heldout
from loop.device import placement
from loop.feedback import next_weights, sedi_prune
from loop.methods import generate_round, start_method, steered, task_universe
from generation.teacher.llamacpp import LlamaCppServer
from loop.models import gguf_path, hub_id, resolve_model
from loop.preflight import PreflightError, check_models_and_services, output_folder
from loop.tracking import Tracker
from training.artifacts import data_hash, set_adapter_base, write_adapter_card
from training.sft import check_hardware, data_mix, mix_rows, student_row, train_adapter, train_adapter_launched

log = logging.getLogger("daig")


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


def make_teacher(cfg: RunConfig, journal: Journal | None = None, check: bool = True) -> CachedTeacher:
    """journal: the run's record of paid calls (OUT/teacher_calls.jsonl); None outside a run (benchmarks).
    check: ask an OpenAI endpoint first whether it answers (a run's preflight has just done so)."""
    t = cfg.generation.teacher
    options = TeacherOptions(t.system_prompt, t.extra_body, t.response_format, t.token_limit_param, t.sampling_params)
    if t.backend == "openai":
        teacher: Teacher = OpenAITeacher(t.model, t.base_url, t.api_key_env, t.max_concurrency, t.timeout_s, t.max_retries,
                                         t.rpm, t.tpm, t.backoff_s, t.max_backoff_s,
                                         outage_failures=t.outage_failures, outage_wait_s=t.outage_wait_s, options=options)
        if check:
            teacher.check_reachable()
    elif t.backend == "llamacpp":
        server = LlamaCppServer(gguf_path(t.model, cfg.cache_dir), t.model, t.num_threads or cfg.num_threads, t.n_ctx, n_parallel=t.max_concurrency)
        teacher = OpenAITeacher(t.model, server.base_url, "", t.max_concurrency, t.timeout_s, t.max_retries,
                                t.rpm, t.tpm, t.backoff_s, t.max_backoff_s, on_close=server.stop,
                                outage_failures=t.outage_failures, outage_wait_s=t.outage_wait_s, options=options)
    else:  # TeacherConfig refuses the other options for the local backend
        teacher = LocalTeacher(resolve_model(t.model, cfg.cache_dir), t.model, t.batch_size, t.num_threads or cfg.num_threads, t.system_prompt,
                               **placement(cfg), static_cache=t.static_cache)
    cache = TeacherCache(t.cache_path) if t.cache_path else None
    if t.mode == "batch":  # TeacherConfig allows it only with backend openai and a cache, where the jobs are kept
        teacher = BatchTeacher(teacher, cache, t.batch_poll_s, t.batch_completion_window, t.batch_retry, t.batch_max_requests,
                               t.batch_max_bytes)
    # The batch factor prices only replies a batch job gave (TeacherReply.batch).
    budget = Budget(t.max_teacher_calls, t.max_teacher_tokens, t.max_cost_usd, t.usd_per_m_prompt_tokens, t.usd_per_m_completion_tokens,
                    t.batch_price_factor)
    return CachedTeacher(teacher, cache, budget, journal)


def _slug(source: str) -> str:
    """A W&B artifact name for a path or Hub id: its last part, safe characters only, and a short hash of the whole."""
    import hashlib
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source).name or "source")[:40] + "-" + hashlib.sha256(source.encode()).hexdigest()[:8]


def ledger_metrics(led: Ledger, n_kept: int, prefix: str = "") -> dict:
    paid_tokens = led.prompt_tokens + led.completion_tokens
    return {f"{prefix}teacher_requests": led.requests, f"{prefix}teacher_calls": led.calls, f"{prefix}cache_hits": led.cache_hits,
            f"{prefix}teacher_retries": led.retries, f"{prefix}teacher_retry_reasons": dict(led.retry_reasons),
            f"{prefix}teacher_failures": dict(led.failures), f"{prefix}teacher_unconfirmed_calls": led.unconfirmed,
            f"{prefix}teacher_tokens": paid_tokens, f"{prefix}teacher_prompt_tokens": led.prompt_tokens,
            f"{prefix}teacher_completion_tokens": led.completion_tokens, f"{prefix}cost_usd": round(led.cost_usd, 6),
            f"{prefix}calls_per_kept": led.calls / n_kept if n_kept else None,
            f"{prefix}tokens_per_kept": paid_tokens / n_kept if n_kept else None}


def _num(x: float | None) -> float | None:
    """NaN (no data) becomes None, which JSON can hold."""
    return x if x is not None and math.isfinite(x) else None


def _finite(d: dict[str, float]) -> dict[str, float | None]:
    return {k: _num(v) for k, v in d.items()}


def train_round(cfg: RunConfig, student: str, rounds_rows: list[Iterable[dict]], adapter: Path | None,
                rdir: Path, r: int, rng: random.Random, on_log=None) -> tuple[Path | None, dict]:
    """Train this round's adapter (restart fresh, or continue the last one) on the rows training.data_mix picks.
    on_log: gets each trainer log entry as it is written (in-process training; W&B's live curve)."""
    continuing = cfg.training.adapter_mode == "continue" and adapter is not None
    if data_mix(cfg.training, continuing) == "new":  # this round's rows only: the earlier rounds' are not read
        rounds_rows = rounds_rows[-1:]
    per_round = [[student_row(x, cfg.training.include_context) for x in rows if x["split"] == "train"] for rows in rounds_rows]
    train_rows = mix_rows(per_round, cfg.training, continuing, rng)
    init = adapter if continuing else None
    if not train_rows:
        log.warning("round %d kept no training examples; the adapter is not retrained this round", r)
        return adapter, {}
    tmp = Path(tempfile.mkdtemp(dir=rdir, prefix=".adapter."))
    if cfg.training.launcher == "accelerate":
        stats = train_adapter_launched(student, train_rows, tmp, cfg.training, cfg.seed + r, cfg.num_threads, init, rdir / ".trainer",
                                       **placement(cfg))
    else:
        stats = train_adapter(student, train_rows, tmp, cfg.training, cfg.seed + r, cfg.num_threads, init, rdir / ".trainer", on_log,
                              **placement(cfg))
    shutil.rmtree(rdir / ".trainer", ignore_errors=True)
    stats["data_sha256"], stats["rows_trained"] = data_hash(train_rows), len(train_rows)
    shutil.rmtree(rdir / "adapter", ignore_errors=True)  # left by a run killed before its checkpoint
    os.replace(tmp, rdir / "adapter")
    return rdir / "adapter", stats


def generate_to_disk(cfg: RunConfig, st: LoopState, teacher: CachedTeacher, sets: dict[str, list[dict]], rdir: Path,
                     rng: random.Random) -> RoundStats:
    """Generate the round into rounds/<r>/data.jsonl and rejected.jsonl as its rows are decided (DAIG: a window of
    requests at a time), decontaminated and split on the way, so a large round is never held whole. Each file
    replaces an older one only when whole: a round killed midway is run again from the teacher cache (no call paid
    twice) and writes the same bytes."""
    g = cfg.generation
    data, rejects, contaminated = RowWriter(rdir / "data.jsonl"), RowWriter(rdir / "rejected.jsonl"), RoundStats()
    rolling = cfg.eval.rolling_heldout and "validation" not in sets  # the old rolling split, only when asked for
    held = []  # it picks held-out rows per task over the whole round, so those rounds are held until the end

    def emit(kept: list[dict], rejected: list[dict]) -> None:
        kept = decontaminate(kept, rejected, contaminated, sets, cfg.eval.decontamination_threshold)
        if rolling:
            held.extend(kept)
        else:  # decisions read the fixed validation set (or nothing): every generated row trains
            for x in kept:
                x["split"] = "train"
            data.write(kept)
        rejects.write(rejected)

    try:
        stats = generate_round(teacher, st.method, g, st.weights, st.round, cfg.seed, rng, not cfg.training.include_context, emit)[2]
        if rolling:
            split_per_task(held, cfg.eval.heldout_fraction, cfg.eval.min_heldout_per_task, rng)
            data.write(held)
        data.commit()
        rejects.commit()
    finally:
        data.discard()
        rejects.discard()
    for reason, n in contaminated.rejected.items():
        stats.rejected[reason] = stats.rejected.get(reason, 0) + n
    return stats


def decontaminate(kept: list[dict], rejected: list[dict], stats, sets: dict[str, list[dict]], threshold: float) -> list[dict]:
    """Kept rows less those whose instruction is a near copy (ROUGE-L F > threshold) of a validation or test
    instruction; those join `rejected` as 'close_to_eval' with the score and the nearest eval instruction. (They
    already counted for the method's own novelty pool and coverage this round: harmless, they are near an eval row.)"""
    eval_texts = [r["instruction"] for rows in sets.values() for r in rows]
    if not eval_texts or threshold >= 1:
        return kept
    near = NoveltyFilter(threshold, top_k=1)
    near.add(eval_texts)
    clean = []
    for row in kept:
        res = near.check(row["instruction"])
        decision = {"filter": "decontamination", "kept": res.kept, "reason": "" if res.kept else "close_to_eval",
                    "score": round(res.best, 4), "nearest_eval": res.top[0][0] if res.top else ""}
        row = {**row, "filters": [*row.get("filters", []), decision]}
        if res.kept:
            clean.append(row)
        else:
            rejected.append({**row, "stage": "decontamination", "reason": "close_to_eval"})
            stats.reject("close_to_eval")
    return clean


def eval_rows(rows: list[dict], sets: dict[str, list[dict]]) -> list[dict]:
    """The rows decisions read: the validation set (yours or DAIG-built), else (eval.rolling_heldout) the held-out
    rows among the generated `rows`; none without either."""
    return sets.get("validation") or [x for x in rows if x["split"] == "eval"]


def load_sets(cfg: RunConfig, out: Path) -> dict[str, list[dict]]:
    """The validation and test sets: the copies in OUT/eval/ when there (a resumed run, or sets DAIG built), else the
    user's files (eval.validation_path, eval.test_path), copied there on the first start."""
    sets = {}
    for name in ("validation", "test"):
        spec, copy = getattr(cfg.eval, f"{name}_path"), out / "eval" / f"{name}.jsonl"
        if copy.exists():
            sets[name] = load_eval_set(str(copy), f"eval.{name}_path", name)
        elif spec:
            sets[name] = load_eval_set(spec, f"eval.{name}_path", name, cfg.generation.datasets.get(spec))
            write_jsonl(copy, sets[name])
    return sets


def ensure_eval_sets(cfg: RunConfig, out: Path, teacher: CachedTeacher, pool: dict, chunks: list, held: list[str]) -> None:
    """Build the DAIG eval sets into OUT/eval/. Their calls go through the run's cache under a ledger and budget of
    their own, so no arm's budget pays for them (the shared cache serves every arm after the first). The held-out
    chunk list is written last: it marks the sets complete, so a kill midway builds them again (from the cache)."""
    ev = cfg.eval
    builder = CachedTeacher(teacher.teacher, teacher.cache, Budget(), teacher.journal, "eval_sets")
    held_set = set(held)
    made, info = build_daig_sets(builder, cfg.generation, pool, [c for c in chunks if c.id in held_set] or chunks,
                                 {"validation": ev.validation_per_task, "test": ev.test_per_task}, ev.set_seed, not cfg.training.include_context)
    for name, rows in made.items():
        if rows:
            write_jsonl(out / "eval" / f"{name}.jsonl", rows)
    # what this run's build cost (a later arm finds the calls in the shared cache); then the marker, last
    write_atomic(out / "eval" / "build.json", json.dumps({**info, "teacher_requests": builder.ledger.requests, "teacher_calls": builder.ledger.calls}))
    write_heldout(out / "eval" / "heldout_chunks.json", held, ev.heldout_chunks, ev.set_seed, write_atomic)
    log.info("eval sets: %d validation and %d test rows from %d held-out chunks (%d teacher requests, %d paid)",
             len(made["validation"]), len(made["test"]), len(held), builder.ledger.requests, builder.ledger.calls)


def sets_source(cfg: RunConfig, out: Path) -> str | None:
    """Where the rows decisions and reports read came from, for metrics.jsonl and the report."""
    ev = cfg.eval
    if ev.validation_path or ev.test_path:
        return "your files"
    held = out / "eval" / "heldout_chunks.json"
    if held.exists():
        share = json.loads(held.read_text(encoding="utf-8"))["heldout_chunks"]
        return f"DAIG-built from held-out chunks ({share:g} of the corpus)" if share else "DAIG-built from the training chunks (same chunks)"
    return "rolling held-out rows" if ev.rolling_heldout else None


def eval_round(cfg: RunConfig, student: str, adapter: Path | None, heldout: list[dict], bench_rows: list[dict], r: int,
               uncertainty: Uncertainty | None = None, sets: dict[str, list[dict]] | None = None) -> EvalResult:
    """Per-task loss on the validation rows (see eval_rows) with this round's adapter, the test set's when given;
    the benchmark with the same model load."""
    sets = sets or {}
    rows = [student_row(x, cfg.training.include_context) for x in eval_rows(heldout, sets)]
    test = [student_row(x, cfg.training.include_context) for x in sets.get("test", [])]
    bench_rows = bench_rows if adapter else []  # the base model was scored once at the start
    if not rows and not bench_rows and not test:
        return EvalResult()
    return evaluate(student, str(adapter) if adapter else None, rows, cfg.eval, cfg.training.max_length, cfg.num_threads,
                    desc=f"round {r} eval", bench_rows=bench_rows, uncertainty=uncertainty, test_rows=test, **placement(cfg))


def judge_samples(cfg: RunConfig, teacher: CachedTeacher, ledger: Ledger, samples: list[dict], r: int) -> dict:
    """The teacher grades each greedy test answer against its reference (eval/judge.py's rubric), greedy and cached,
    under a ledger and cap of its own (eval.judge_max_calls over the run), so grading never spends generation's
    budget. Each sample gets its verdict ('unclear' when none parses, 'error: ...' when the call failed)."""
    ev = cfg.eval
    b = teacher.budget  # the same prices, so the judge's dollars are counted too
    judge = CachedTeacher(teacher.teacher, teacher.cache, Budget(max_calls=ev.judge_max_calls, usd_per_m_prompt=b.usd_per_m_prompt,
                                                                 usd_per_m_completion=b.usd_per_m_completion,
                                                                 batch_price_factor=b.batch_price_factor), teacher.journal, "judge")
    judge.ledger = ledger  # the run's judge ledger: the cap holds across rounds and resumes
    replies = judge.generate([TeacherRequest((("user", judge_prompt(s)),), ev.judge_max_tokens, 0.0, 1.0, 0) for s in samples],
                             desc=f"round {r} judge")
    verdicts = ["" if x.error else parse_verdict(x.text) for x in replies]
    for s, v, x in zip(samples, verdicts, replies):
        s["judge"] = v or (f"error: {x.error}" if x.error else "unclear")
    if judge.exhausted:
        log.warning("judge cap reached (eval.judge_max_calls=%d): %d answers ungraded this round", ev.judge_max_calls, sum(not v for v in verdicts))
    score, n = judge_score(verdicts)
    counts = {k: sum(s["judge"] == k for s in samples) for k in ("correct", "partly", "wrong")}
    return {"test_judge_score": score, "test_judge_n": n, "test_judge_verdicts": {**counts, "ungraded": len(samples) - n},
            "judge_teacher_requests": ledger.requests, "judge_teacher_calls": ledger.calls,
            "judge_teacher_tokens": ledger.prompt_tokens + ledger.completion_tokens, "judge_cost_usd": round(ledger.cost_usd, 6)}


class RunLocked(FileExistsError):
    """Another process is working in the run folder."""


@contextmanager
def locked(out: Path):
    """Hold OUT/.lock (an flock, released by the OS when the process dies, so a kill leaves no stale lock) while a
    process works in the folder; a second `run` or `resume` there is refused with the holder's pid."""
    f = open(out / ".lock", "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunLocked(f"{out} is in use by another daig process (pid {holder}); wait for it to finish or stop it, "
                        "then `daig resume`") from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    try:
        yield
    finally:
        f.close()


def run(cfg: RunConfig, out_dir: str | Path) -> list[dict]:
    """Run every round; returns the per-round metrics (also in out_dir/metrics.jsonl)."""
    out = Path(out_dir)
    problem = output_folder(out)
    if problem:
        raise PreflightError([problem])
    with locked(out):
        if (out / METRICS).exists() or (out / CHECKPOINT).exists() or (out / LEGACY_CHECKPOINT).exists():
            raise FileExistsError(f"{out} already holds a run; continue it with `daig resume {out}` or choose a new --out")
        return _run(cfg, out, None)


def resume(out_dir: str | Path, allow_pickle: bool = False) -> list[dict]:
    """Continue a killed run from its last finished stage, with its saved config. Teacher replies come back from
    the cache (a request answered before the kill is never paid twice); rows are neither lost nor duplicated.
    allow_pickle: read an older version's checkpoint.pkl (unpickling runs any code the file names)."""
    out = Path(out_dir)
    if not (out / CHECKPOINT).exists() and not (out / LEGACY_CHECKPOINT).exists():
        raise FileNotFoundError(f"{out} has no {CHECKPOINT}: not a run folder, or it was made before resume existed")
    with locked(out):
        return _resume(out, allow_pickle)


def _resume(out: Path, allow_pickle: bool) -> list[dict]:
    saved = read_config(out)
    ev = saved.setdefault("eval", {})
    if "rolling_heldout" not in ev:  # a run started before fixed sets were the default keeps its rolling split
        ev.update(rolling_heldout=True, validation_per_task=ev.get("validation_per_task", 0), test_per_task=ev.get("test_per_task", 0))
    cfg = build(RunConfig, saved)
    state = read_checkpoint(out, allow_pickle)
    if state["stopped"] or state["round"] > cfg.rounds:
        log.info("%s already finished (%s)", out, state["stopped"] or f"{cfg.rounds} rounds")
        return state["history"]
    for stale in clean_stale(out):
        log.info("removed %s, left by a kill mid-write", stale)
    log.info("resuming %s at round %d after stage '%s'", out, state["round"], state["stage"])
    return _run(cfg, out, state)


def _run(cfg: RunConfig, out: Path, saved: dict | None) -> list[dict]:
    """saved: None for a new run, else the checkpoint (read_checkpoint)."""
    # Data first: bad input fails in seconds, before any model loads; then the config's consistency; then the folders,
    # models and endpoint (preflight), all before anything is written or paid.
    g = cfg.generation
    problems = []
    try:
        chunks = load_corpus(g.domain_path, g.chunk_words, g.domain_split, g.domain_text_field, g.datasets.get(g.domain_path)) \
            if g.domain_path else []
    except DataError as e:
        problems, chunks = [str(e)], []
    try:
        pool = load_pools(g)
    except DataError as e:
        problems, pool = problems + [str(e)], {}
    if problems:  # with every other problem the services have, so one attempt shows them all
        raise PreflightError(problems + check_models_and_services(cfg))
    log.info("method %s; corpus: %d chunks; pool: %s", g.method, len(chunks), ", ".join(f"{t} ({len(v)})" for t, v in pool.items()))
    if steered(g.method) and cfg.feedback.policy != "uniform" and cfg.feedback.floor * len(pool) >= 1:
        raise ConfigError(f"feedback.floor={cfg.feedback.floor} is too high for {len(pool)} tasks: set it below {1 / len(pool):.4f}")
    fresh = saved is None
    ev_cfg = cfg.eval
    build_sets = (ev_cfg.validation_per_task or ev_cfg.test_per_task) and not (ev_cfg.validation_path or ev_cfg.test_path)
    if build_sets and not chunks:
        raise ConfigError("eval.validation_per_task / eval.test_per_task: DAIG builds the eval sets from your documents; set generation.domain_path, "
                          "give eval.validation_path, or set both to 0 (eval.rolling_heldout=true then steers by held-out generated rows)")
    steers = steered(g.method) and cfg.feedback.policy != "uniform"
    has_validation = ev_cfg.validation_path or (build_sets and ev_cfg.validation_per_task)
    has_test = ev_cfg.test_path or (build_sets and ev_cfg.test_per_task)
    if steers and not (has_validation or ev_cfg.rolling_heldout):
        raise ConfigError(f"feedback.policy={cfg.feedback.policy} reads validation losses but there is no validation set: set "
                          "eval.validation_per_task > 0, give eval.validation_path, or set eval.rolling_heldout=true")
    if ev_cfg.judge and not (has_test and ev_cfg.generation_samples):
        raise ConfigError("eval.judge grades greedy answers on the test set: " + ("give eval.test_path" if ev_cfg.validation_path else
                          "set eval.test_per_task > 0 or give eval.test_path") + ", and keep eval.generation_samples > 0")
    held_path = out / "eval" / "heldout_chunks.json"
    held = read_heldout(held_path) if held_path.exists() else heldout_chunk_ids(chunks, ev_cfg.heldout_chunks, ev_cfg.set_seed) if build_sets else []
    held_set = set(held)  # held-out chunks never reach a training request
    train_chunks = [c for c in chunks if c.id not in held_set]
    where = placement(cfg)  # a device this machine lacks stops the run here, before anything is written or paid
    method = start_method(g, pool, train_chunks, cfg.cache_dir, cfg.num_threads, where["device"], where["dtype"])
    st = LoopState(method=method) if fresh else state_from_json(saved, out, method)
    bench_rows = load_benchmark(cfg.eval.benchmark_path, cfg.eval.benchmark_size, g.datasets.get(cfg.eval.benchmark_path)) \
        if cfg.eval.benchmark_path else []
    sets = load_sets(cfg, out)
    unknown = sorted({r["task"] for r in sets.get("validation", [])} - set(pool)) if steered(g.method) else []
    if unknown:
        raise ConfigError(f"eval.validation_path: tasks {unknown} are not pool tasks {sorted(pool)}; rename them or add them to the pools "
                          "(the policies weigh pool tasks only)")

    check_hardware(cfg.training)
    problems = check_models_and_services(cfg)  # before anything is written or paid
    if problems:
        raise PreflightError(problems)
    if fresh:  # saved once every check passed, so a resume never meets a model that cannot load
        save_config(out, to_dict(cfg))
    journal_path = out / JOURNAL
    current = journal_path.exists()  # a run folder of this version (older ones kept no journal, no W&B record)
    if not fresh and not current:  # a run begun before journals: its checkpointed ledger is the start
        with closing(Journal(journal_path)) as started:
            started.base("generation", st.ledger)
            started.base("judge", st.judge_ledger)
    if journal_path.exists():  # every call an earlier attempt paid for, including those in flight when it was killed
        st.ledger = st.ledger.paid_from(Journal.replay(journal_path, "generation"))
        st.judge_ledger = st.judge_ledger.paid_from(Journal.replay(journal_path, "judge"))
    teacher = make_teacher(cfg, Journal(journal_path), check=False)
    teacher.ledger = st.ledger
    student = resolve_model(cfg.student, cfg.cache_dir)
    tracker = Tracker(cfg.tracking, out, to_dict(cfg), run_id=st.wandb_id)
    st.wandb_id = tracker.run.id if tracker.run is not None else ""
    if fresh:
        tracker.use_inputs([(f"corpus-{_slug(g.domain_path)}", "corpus", g.domain_path)] if g.domain_path else [])
    try:  # from here on, whatever happens, the teacher (a llama.cpp server, maybe) and the tracker are closed
        if not fresh:
            tracker.catch_up(out, recorded=current)
        if build_sets and not held_path.exists():
            ensure_eval_sets(cfg, out, teacher, pool, chunks, held)
            sets = load_sets(cfg, out)
        if steers and not sets.get("validation") and not ev_cfg.rolling_heldout:
            raise ConfigError(f"feedback.policy={cfg.feedback.policy}: the eval set build gave no validation rows (see {out / 'eval' / 'build.json'}); "
                              "give eval.validation_path, use more documents, or set eval.rolling_heldout=true")
        if ev_cfg.judge and not sets.get("test"):
            log.warning("eval.judge: the test set is empty, so nothing is graded")
        if fresh:
            base = benchmark(student, None, bench_rows, cfg.eval.max_new_tokens, cfg.num_threads, **placement(cfg)) if bench_rows else None
            if base:
                write_jsonl(out / "benchmark_base.jsonl", base["samples"])
                log.info("benchmark: base model ROUGE-L %.4f on %d tasks", base["rouge_l"], len(bench_rows))
                st.base_bench = {"rouge_l": base["rouge_l"], "bleu": base["bleu"]}
            st.rng = random.Random(cfg.seed).getstate()
            tasks = task_universe(g, pool, [])
            st.weights = {t: 1.0 / len(tasks) for t in tasks}
            st.round_ledger_start = teacher.ledger.copy()
            save_checkpoint(out, st, teacher.journal)
        rng = random.Random()
        rng.setstate(st.rng)
        while st.round <= cfg.rounds and not st.stopped:
            r, rdir = st.round, round_dir(out, st.round)
            start = time.time()
            if st.stage == "start":
                st.stats = generate_to_disk(cfg, st, teacher, sets, rdir, rng)
                st.rounds_with_rows += 1
                st.gen_seconds, st.stage, st.rng = round(time.time() - start, 2), "generated", rng.getstate()
                save_checkpoint(out, st, teacher.journal)
            if st.stage == "generated":
                for stale in rdir.glob(".adapter.*"):  # a training killed midway
                    shutil.rmtree(stale, ignore_errors=True)
                prev = Path(st.adapter) if st.adapter else None
                rounds = [round_rows(out, i) for i in range(1, st.rounds_with_rows + 1)]
                adapter, st.train_stats = train_round(cfg, student, rounds, prev, rdir, r, rng, tracker.train_logger(r))
                st.adapter, st.stage, st.rng = str(adapter) if adapter else None, "trained", rng.getstate()
                save_checkpoint(out, st, teacher.journal)
            finish_round(cfg, st, out, teacher, tracker, pool, train_chunks, bench_rows, student, sets)
            save_checkpoint(out, st, teacher.journal)
            if teacher.exhausted:
                log.warning("teacher budget reached (%s): stopping after round %d; everything so far is saved", teacher.exhausted, r)
    finally:
        teacher.close()
        tracker.finish()
    return st.history


def finish_round(cfg: RunConfig, st: LoopState, out: Path, teacher: CachedTeacher, tracker: Tracker, pool: dict, chunks: list,
                 bench_rows: list[dict], student: str, sets: dict[str, list[dict]] | None = None) -> None:
    """Evaluate, reweight, record and log the round, and move the state to the next round's start."""
    sets, r = sets or {}, st.round
    # the rolling held-out rows, where decisions read them (none are needed with a validation set)
    heldout = [] if sets.get("validation") else [x for x in run_rows(out, st.rounds_with_rows) if x["split"] == "eval"]
    adapter = Path(st.adapter) if st.adapter else None
    ev = eval_round(cfg, student, adapter, heldout, bench_rows, r, uncertainty_settings(cfg, heldout, sets, r), sets)
    judged = {}
    if cfg.eval.judge and ev.test and ev.samples:
        judged = judge_samples(cfg, teacher, st.judge_ledger, ev.samples, r)
        save_checkpoint(out, st, teacher.journal)  # the judge's paid calls are in the saved ledger before anything else can fail
    rw = reweight(cfg, st, out, ev, task_universe(cfg.generation, pool, run_rows(out, st.rounds_with_rows)))
    metrics = round_metrics(cfg, st, out, teacher, ev, judged, rw, chunks, sets)
    st.stopped = "budget" if teacher.exhausted else plateau(st.history + [metrics], cfg.plateau_rounds, cfg.plateau_min_delta)
    metrics["stopped"] = st.stopped or None
    record_round(cfg, st, round_dir(out, r), tracker, ev, rw, metrics)
    st.weights, st.round, st.stage, st.train_stats = rw.next_weights, r + 1, "start", {}
    st.round_ledger_start = teacher.ledger.copy()


def uncertainty_settings(cfg: RunConfig, rows: list[dict], sets: dict[str, list[dict]], r: int) -> Uncertainty | None:
    """What active_uncertainty measures prompt uncertainty on: the validation rows as the student sees them."""
    fb = cfg.feedback
    if fb.policy != "active_uncertainty":
        return None
    by_task: dict[str, list[dict]] = {}
    for x in eval_rows(rows, sets):
        by_task.setdefault(x["task"], []).append({**student_row(x, cfg.training.include_context), "instruction": x["instruction"]})
    return Uncertainty(by_task, fb.uncertainty_perturbations, fb.uncertainty_drop, cfg.training.max_length, cfg.seed + r,
                       batch_for(cfg.eval.batch_size, placement(cfg)["device"]), fb.uncertainty_rows, fb.uncertainty_target,
                       cfg.eval.max_new_tokens)


@dataclass
class Reweighting:
    """What the feedback read and decided this round."""
    tasks: list[str]
    weights: dict[str, float]  # this round's
    raw: dict[str, float]  # per-task validation loss, NaN where none
    ses: dict[str, float]
    losses: dict[str, float]  # what the policy read: shrunk toward the mean (loss_softmax, sedi_prune) or raw
    own_weight: dict[str, float]  # the shrinkage weight of each task's own mean ({} unshrunk)
    shrinking: bool
    next_weights: dict[str, float]
    evidence: dict


def reweight(cfg: RunConfig, st: LoopState, out: Path, ev: EvalResult, tasks: list[str]) -> Reweighting:
    """Next round's task weights from this round's losses; logged only for the unsteered methods. Updates the loss
    history and task counts, and (sedi_prune) prunes the method's pool."""
    g, fb = cfg.generation, cfg.feedback
    weights = {t: st.weights.get(t, math.nan) for t in tasks}
    raw = {t: ev.task_loss.get(t, math.nan) for t in tasks}
    ses = {t: ev.task_se.get(t, math.nan) for t in tasks}
    # Level-reading policies get the shrunk losses; the history keeps raw ones, since a shrinkage weight that grows
    # with the rows would read as a loss change to learning_progress and ucb.
    shrinking = fb.shrink and fb.policy in ("loss_softmax", "sedi_prune")
    losses, own_weight = shrink(raw, ses) if shrinking else (raw, {})
    for x in round_rows(out, st.round):
        st.task_counts[x["task"]] = st.task_counts.get(x["task"], 0) + 1
    policy = fb if steered(g.method) else _logged_only(fb, len(tasks))
    unc = ev.prompt_uncertainty
    new_weights, evidence = next_weights(losses, policy, st.loss_history, st.task_counts,
                                         uncertainty={t: unc.get(t, math.nan) for t in tasks} if unc is not None else None)
    st.loss_history.append(raw)
    if fb.policy == "sedi_prune" and steered(g.method):
        st.method.pool, evidence["pool_pruning"] = sedi_prune(st.method.pool, list(round_rows(out, st.round)), st.loss_history, fb.sedi_min_per_task or g.daig.examples_in_prompt)
    return Reweighting(tasks, weights, raw, ses, losses, own_weight, shrinking, new_weights, evidence)


def round_metrics(cfg: RunConfig, st: LoopState, out: Path, teacher: CachedTeacher, ev: EvalResult, judged: dict,
                  rw: Reweighting, chunks: list, sets: dict[str, list[dict]]) -> dict:
    """The round's line of metrics.jsonl."""
    kept, covered = row_counts(out, st.rounds_with_rows)
    test, bench, base_bench, stats, train_stats = ev.test or {}, ev.benchmark, st.base_bench, st.stats, st.train_stats
    shrinking = rw.shrinking
    return {
        "round": st.round,
        "task_weights": _finite(rw.weights),
        "task_eval_loss": _finite(rw.raw),
        "task_eval_se": _finite(rw.ses),
        "task_eval_n": {t: ev.task_n.get(t, 0) for t in rw.tasks},
        "task_eval_loss_shrunk": _finite(rw.losses) if shrinking else None,
        "task_eval_own_weight": _finite(rw.own_weight) if shrinking else None,
        "next_task_weights": _finite(rw.next_weights),
        "feedback_evidence": _json_safe(rw.evidence),
        "eval_loss": _num(ev.loss),
        "eval_set": "validation" if sets.get("validation") else "heldout" if cfg.eval.rolling_heldout else None,  # what task_eval_loss was measured on
        "eval_sets_from": sets_source(cfg, out),
        "test_task_loss": _finite({t: v["loss"] for t, v in test.items()}) if test else None,
        "test_task_se": _finite({t: v["se"] for t, v in test.items()}) if test else None,
        "test_task_n": {t: v["examples"] for t, v in test.items()} if test else None,
        "test_macro_loss": macro_mean(v["loss"] for v in test.values()) if test else None,
        "sample_rouge_l": _num(ev.sample_rouge_l),
        "test_rouge_l": _num(ev.sample_rouge_l) if test else None,  # the samples come from the test set when there is one
        "test_rouge_l_n": len(ev.samples) if test else None,
        **judged,
        "generation_metrics": ev.generation_metrics,
        "benchmark_rouge_l": _num(bench["rouge_l"]) if bench else None,
        "benchmark_bleu": _num(bench["bleu"]) if bench else None,
        "benchmark_rouge_l_base": _num(base_bench["rouge_l"]) if base_bench else None,
        "benchmark_bleu_base": _num(base_bench["bleu"]) if base_bench else None,
        "n_generated": stats.requests,
        "n_kept": kept["last"],
        "n_train": kept["train"],
        "n_eval": kept["eval"],
        "rejected": stats.rejected,
        **coverage(chunks, covered, stats),
        **ledger_metrics(teacher.ledger.minus(st.round_ledger_start), kept["last"]),
        **ledger_metrics(teacher.ledger, kept["all"], prefix="run_"),
        "budget_exhausted": teacher.exhausted or None,
        "train_loss": train_stats.get("train_loss"),
        "train_steps": train_stats.get("steps", 0),
        "adapter": st.adapter,
        "generation_seconds": st.gen_seconds,
        "train_seconds": train_stats.get("seconds", 0),
        "eval_seconds": ev.seconds,
        "seconds": round(st.gen_seconds + train_stats.get("seconds", 0) + ev.seconds, 2),
    }


def record_round(cfg: RunConfig, st: LoopState, rdir: Path, tracker: Tracker, ev: EvalResult, rw: Reweighting, metrics: dict) -> None:
    """The round's files (samples, benchmark samples, adapter card), its W&B entry, its metrics line and its log line."""
    r, train_stats, adapter = st.round, st.train_stats, Path(st.adapter) if st.adapter else None
    if ev.benchmark:
        write_jsonl(rdir / "benchmark_samples.jsonl", ev.benchmark["samples"])
    if train_stats and adapter:
        base = hub_id(cfg.student)  # the upstream Hub id where there is one, in the card and adapter_config.json (not a local path)
        if base:
            set_adapter_base(adapter, base)
        write_adapter_card(adapter, {"base_model": base or cfg.student, "round": r, "rows": train_stats["rows_trained"],
                                     "data_sha256": train_stats["data_sha256"],
                                     "train": {**to_dict(cfg.training), **{k: v for k, v in train_stats.items() if k != "loss_history"}},
                                     "metrics": {k: metrics[k] for k in ("task_eval_loss", "eval_loss", "sample_rouge_l")}})
    write_jsonl(rdir / "eval_samples.jsonl", ev.samples)
    table = [[r, t, _num(rw.weights[t]), _num(rw.raw[t]), rw.next_weights[t]] for t in rw.tasks]
    artifacts = [("data", "dataset", rdir / "data.jsonl")] + ([("adapter", "model", adapter)] if train_stats and adapter else [])
    used = ["adapter"] if cfg.training.adapter_mode == "continue" and r > 1 else []
    tracker.log_round(metrics, table, ev.samples, train_stats.get("loss_history", []), artifacts, used)  # once per round, even after a kill
    st.history.append(metrics)
    stats = st.stats
    log.info("round %d: kept %d/%d (rejected %s), teacher %d calls (%d cached), train loss %s, eval loss %s, %.0f s; next weights %s",
             r, metrics["n_kept"], stats.requests, stats.rejected or "none", metrics["teacher_calls"], metrics["cache_hits"],
             _fmt(metrics["train_loss"]), _fmt(metrics["eval_loss"]), metrics["seconds"],
             ", ".join(f"{t}={w:.2f}" for t, w in rw.next_weights.items()))
    if st.stopped == "plateau":
        log.info("eval loss improved by less than %s over the last %d rounds: stopping after round %d", cfg.plateau_min_delta, cfg.plateau_rounds, r)


def row_counts(out: Path, rounds: int) -> tuple[dict[str, int], tuple[set, set]]:
    """One pass over the run's kept rows (rounds 1..rounds, the last one just finished): how many the last round
    kept (and of them trains and held out) and the whole run kept; the chunks covered up to and before the last."""
    counts, covered, before = {"last": 0, "train": 0, "eval": 0, "all": 0}, set(), set()
    for r in range(1, rounds + 1):
        for x in round_rows(out, r):
            counts["all"] += 1
            covered.add(chunk_id(x))
            if r < rounds:
                before.add(chunk_id(x))
            else:
                counts["last"] += 1
                counts[x["split"]] = counts.get(x["split"], 0) + 1
    return counts, (covered - {None}, before)


def coverage(chunks: list, covered: tuple[set, set], stats) -> dict:
    """Which of the training chunks (and their documents) the kept rows so far are about; None without a corpus.
    covered: the chunk ids the rows so far are about, and those of the rounds before this one (row_counts)."""
    covered, before = covered
    return {"chunks_covered": len(covered) if chunks else None, "chunks_total": len(chunks) or None,
            "round_chunks_requested": stats.chunks or None,  # DAIG: distinct chunks / documents this round asked about
            "round_documents_requested": stats.documents or None,
            "documents_covered": len({c.source for c in chunks if c.id in covered}) if chunks else None,
            "documents_total": len({c.source for c in chunks}) or None,
            "new_chunks_covered": len(covered - before)}


def plateau(history: list[dict], rounds: int, min_delta: float) -> str:
    """'plateau' when the best eval loss of the last `rounds` rounds beats the best before them by less than min_delta."""
    losses = [m["eval_loss"] for m in history]
    if not rounds or len(losses) <= rounds:
        return ""
    before = [x for x in losses[:-rounds] if x is not None]
    recent = [x for x in losses[-rounds:] if x is not None]
    if not before or not recent:
        return ""
    return "plateau" if min(before) - min(recent) < min_delta else ""


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
