"""Ablations: a grid of named override sets x seeds, each arm a normal run, all sharing one teacher cache.

Run: daig ablate configs/ablations/policies.yaml --out runs/ablations/policies

The ablation file names a base run config, overrides for every arm, the arms (name -> overrides) and the seeds.
Arms run one after another into OUT/arms/<arm>/seed<k>; an interrupted ablation picks up where it stopped
(finished arms are skipped, a killed arm is resumed). OUT/summary.jsonl has one line per arm x seed and
OUT/summary.md the per-arm table (mean and spread over seeds) and each arm's paired difference to the control arm
(`control:`, default `uniform`), seed by seed, with 95% t and bootstrap intervals. Each arm is a W&B run in one group.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from eval.stats import macro_mean
from loop.paired import control_arm, paired_differences, paired_measure
from loop.config import ConfigError, load_config
from loop.runfolder import CHECKPOINT, METRICS, read_jsonl, write_atomic
from loop.controller import resume, run

log = logging.getLogger("daig")


@dataclass
class Ablation:
    base: Path
    arms: dict[str, list[str]]
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    group: str = ""
    control: str = ""


def load_ablation(path: str | Path) -> Ablation:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ablation file {path} not found; pass a YAML such as configs/ablations/policies.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"base", "arms", "seeds", "overrides", "group", "control"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; an ablation has base, overrides, arms, seeds, group, control")
    if not data.get("base"):
        raise ConfigError(f"{path}: 'base' is missing; name the run config every arm starts from (relative to this file)")
    arms = data.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise ConfigError(f"{path}: 'arms' must map arm names to lists of overrides, e.g. uniform: [feedback.policy=uniform]")
    for name, over in arms.items():
        if not isinstance(over, list) or not all(isinstance(o, str) and "=" in o for o in over):
            raise ConfigError(f"{path}: arm '{name}' must be a list of key=value overrides")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: 'seeds' must be a non-empty list of integers")
    abl = Ablation(base=(path.resolve().parent / data["base"]).resolve(), arms={str(k): v for k, v in arms.items()}, seeds=seeds,
                   overrides=list(data.get("overrides") or []), group=str(data.get("group") or path.stem))
    abl.control = control_arm(list(abl.arms), str(data.get("control") or ""))
    if abl.control not in abl.arms:
        raise ConfigError(f"{path}: control '{abl.control}' is not an arm; name one of {', '.join(abl.arms)}")
    for name in abl.arms:  # every arm's config is validated before the first one runs
        for s in abl.seeds:
            load_config(abl.base, arm_overrides(abl, name, s))
    return abl


def arm_overrides(abl: Ablation, arm: str, seed: int) -> list[str]:
    return [*abl.overrides, *abl.arms[arm], f"seed={seed}", f"tracking.group={abl.group}", f"tracking.run_name={arm}-seed{seed}"]


def run_ablation(path: str | Path, out_dir: str | Path) -> list[dict]:
    abl = load_ablation(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "ablation.yaml", Path(path).read_text(encoding="utf-8"))
    summary = []
    for arm in abl.arms:
        for seed in abl.seeds:
            rel = Path("arms") / arm / f"seed{seed}"
            run_dir = out / rel
            start = time.time()
            status = "done"
            shared = shares_eval_sets(abl, arm)
            if shared and not (run_dir / CHECKPOINT).exists():  # never into a run under way: it chose its chunks already
                copy_sets(out / "eval", run_dir / "eval")
            try:
                if (run_dir / CHECKPOINT).exists():
                    history = resume(run_dir)  # returns at once when that arm had finished
                else:
                    log.info("ablation %s: arm %s, seed %d", abl.group, arm, seed)
                    history = run(load_config(abl.base, arm_overrides(abl, arm, seed)), run_dir)
            except Exception as e:  # one failed arm must not lose the others; the summary says which failed
                log.error("arm %s seed %d failed: %s", arm, seed, e)
                history, status = [], f"failed: {type(e).__name__}: {e}"
            if shared:  # the first arm that built the sets publishes them; every later arm starts from a copy
                copy_sets(run_dir / "eval", out / "eval")
            summary.append(summarize(arm, seed, str(rel), arm_overrides(abl, arm, seed), history, status,
                                     _wall_seconds(run_dir, start), set_hash(run_dir / "eval" / "test.jsonl")))
            write_atomic(out / "summary.jsonl", "".join(json.dumps(s) + "\n" for s in summary))
    write_atomic(out / "summary.md", summary_table(summary) + paired_table(summary, abl.control) + curve_table(summary) + sets_note(out))
    return summary


# Overrides that change what the eval sets are; an arm that sets one builds its own sets in its run folder.
SET_KEYS = ("eval.", "generation.", "student=", "training.include_context", "cache_dir")


def shares_eval_sets(abl: Ablation, arm: str) -> bool:
    return not any(o.startswith(SET_KEYS) for o in abl.arms[arm])


def copy_sets(src: Path, dst: Path) -> None:
    """Copy a finished set folder (its heldout_chunks.json marks it complete) where there is none yet, atomically."""
    if not (src / "heldout_chunks.json").exists() or dst.exists():
        return
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    os.replace(tmp, dst)


def sets_note(out: Path) -> str:
    path = out / "eval" / "build.json"
    if not path.exists():
        return ""
    b = json.loads(path.read_text(encoding="utf-8"))
    return (f"\nEval sets: built once in eval/ ({b.get('teacher_requests', 0)} teacher requests, {b.get('teacher_calls', 0)} paid, "
            "outside every arm's budget); every arm and seed that shares its generation and eval settings read those files.\n")


def _wall_seconds(run_dir: Path, start: float) -> float:
    """Total seconds over the run's rounds (kept across a resume), else the time this call took."""
    if (run_dir / METRICS).exists():
        return round(sum(m["seconds"] for m in read_jsonl(run_dir / METRICS)), 1)
    return round(time.time() - start, 1)


def set_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def summarize(arm: str, seed: int, run_dir: str, overrides: list[str], history: list[dict], status: str, seconds: float,
              test_sha256: str | None = None) -> dict:
    last = history[-1] if history else {}
    return {"arm": arm, "seed": seed, "run_dir": run_dir, "overrides": overrides, "status": status, "rounds": len(history),
            "test_set_sha256": test_sha256,  # arms are compared on the test set only where these match
            "final_eval_loss": macro_mean((last.get("task_eval_loss") or {}).values()),  # macro: mean over tasks
            "final_test_loss": last.get("test_macro_loss"),  # the fixed test set (yours or DAIG-built), when there is one
            "eval_set": last.get("eval_set"),
            "final_sample_rouge_l": last.get("sample_rouge_l"),
            "final_test_rouge_l": last.get("test_rouge_l"),  # greedy answers on the test set's fixed subset
            "final_test_judge": last.get("test_judge_score"),  # the teacher's grade of those answers (eval.judge)
            # test loss against the teacher requests so far (cache hits included: what the arm alone would have paid)
            "curve": [{"round": m["round"], "teacher_requests": m.get("run_teacher_requests"), "test_loss": m.get("test_macro_loss")} for m in history],
            "final_benchmark_rouge_l": last.get("benchmark_rouge_l"), "base_benchmark_rouge_l": last.get("benchmark_rouge_l_base"),
            "kept": sum(m["n_kept"] for m in history), "teacher_calls": last.get("run_teacher_calls"),
            "teacher_requests": last.get("run_teacher_requests"), "teacher_tokens": last.get("run_teacher_tokens"),
            "cost_usd": last.get("run_cost_usd"), "wall_seconds": seconds, "stopped": last.get("stopped")}


def summary_table(rows: list[dict]) -> str:
    cols = [("final_eval_loss", "macro eval loss", 4), ("final_test_loss", "macro test loss", 4), ("final_test_rouge_l", "test ROUGE-L", 4),
            ("final_test_judge", "test judge", 3), ("final_sample_rouge_l", "sample ROUGE-L", 4),
            ("final_benchmark_rouge_l", "held-out ROUGE-L", 4), ("kept", "rows kept", 1),
            ("teacher_calls", "teacher calls", 1), ("teacher_tokens", "teacher tokens", 0), ("cost_usd", "cost $", 4),
            ("wall_seconds", "wall s", 0)]
    lines = ["| arm | seeds | " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        done = [r for r in rows if r["arm"] == arm and r["status"] == "done"]
        cells = [_mean_spread([r[key] for r in done], digits) for key, _, digits in cols]
        lines.append(f"| {arm} | {len(done)} | " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] != "done"]
    notes = [f"\n{len(failed)} arm run(s) failed: " + "; ".join(f"{r['arm']} seed {r['seed']}: {r['status']}" for r in failed)] if failed else []
    return "\n".join(lines + notes) + "\n\nmean ± standard deviation over seeds; macro eval loss = mean over tasks of the loss decisions read (the validation set when there is one, else each arm's own held-out rows); test ROUGE-L = greedy answers on the test set's fixed subset.\n"


def _mean_spread(values: list, digits: int) -> str:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return "n/a"
    mean = statistics.fmean(xs)
    return f"{mean:.{digits}f}" + (f" ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else "")


def paired_table(rows: list[dict], control: str) -> str:
    """On the fixed test set when the runs have one, else on the eval loss the runs were steered by."""
    key, what, note = paired_measure(rows)
    lines = [f"\n| arm | paired difference of {what} to {control}: mean [95% t interval] | 95% bootstrap interval | seeds paired | "
             "smallest detectable difference (80% power) | reading |", "|---|---|---|---|---|---|"]
    for d in paired_differences(rows, control, key):
        cell = f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" if d["seeds"] > 1 else f"{d['mean']:+.4f}" if d["seeds"] else "n/a"
        boot = f"[{d['boot_low']:+.4f}, {d['boot_high']:+.4f}]" if d["seeds"] > 1 else "n/a"
        mde = f"±{d['detectable']:.4f}" if d["seeds"] > 1 else "n/a"
        lines.append(f"| {d['arm']} | {cell} | {boot} | {d['seeds']} | {mde} | {d['reading']} |")
    return "\n".join(lines) + (f"\n\n{note} The smallest detectable difference is the true difference these seeds, with the spread they "
                                "showed, would find 80% of the time (a post-hoc figure from few seeds): effects well below it would "
                                "likely go unseen.\n")


def curve_table(rows: list[dict]) -> str:
    """Macro test loss after each round against cumulative teacher requests, mean over seeds: arms compared at equal
    budget, round by round. Empty without a test set."""
    done = [r for r in rows if r["status"] == "done" and any(p["test_loss"] is not None for p in r.get("curve", []))]
    if not done:
        return ""
    n_rounds = max(len(r["curve"]) for r in done)
    lines = ["\n| arm | " + " | ".join(f"round {k + 1}: requests, test loss" for k in range(n_rounds)) + " |", "|" + "---|" * (n_rounds + 1)]
    for arm in dict.fromkeys(r["arm"] for r in done):
        cells = []
        for k in range(n_rounds):
            pts = [r["curve"][k] for r in done if r["arm"] == arm and len(r["curve"]) > k]
            calls = [p["teacher_requests"] for p in pts if p["teacher_requests"] is not None]
            cells.append(f"{statistics.fmean(calls):.0f}, {_mean_spread([p['test_loss'] for p in pts], 4)}" if calls else "n/a")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nTest loss against cumulative teacher requests (cache hits included), mean ± std over seeds.\n"
