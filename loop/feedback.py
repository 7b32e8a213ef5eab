"""Feedback policies: per-task eval results -> next round's task sampling weights.

A policy is a plain function of the per-round loss history (oldest first, this round last) whose weights
sum to 1; next_weights also returns the evidence behind them, which the controller logs every round.
Tasks without a finite loss yet (never generated, or nothing held out) get the mean of the known
losses, so they are neither favoured nor starved.
"""
from __future__ import annotations

import math

from generation.data.pool import PoolItem
from generation.rows import pool_ids
from loop.config import FeedbackConfig


def _fill_missing(losses: dict[str, float]) -> dict[str, float]:
    known = [v for v in losses.values() if v is not None and math.isfinite(v)]
    mean = sum(known) / len(known) if known else 0.0
    return {t: v if v is not None and math.isfinite(v) else mean for t, v in losses.items()}


def uniform(losses: dict[str, float]) -> dict[str, float]:
    return {t: 1.0 / len(losses) for t in losses}


def loss_softmax(losses: dict[str, float], temperature: float, floor: float) -> dict[str, float]:
    """floor + (1 - n*floor) * softmax(loss / temperature): higher loss, more weight; none below floor."""
    if floor * len(losses) >= 1:
        raise ValueError(f"feedback.floor={floor} is too high for {len(losses)} tasks: it must be < {1 / len(losses):.4f}")
    filled = _fill_missing(losses)
    top = max(filled.values())
    exp = {t: math.exp((v - top) / temperature) for t, v in filled.items()}
    total = sum(exp.values())
    return {t: floor + (1 - floor * len(exp)) * e / total for t, e in exp.items()}


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _centred(scores: dict[str, float | None]) -> dict[str, float]:
    """Missing scores become the mean; then scale to [-1, 1] around the mean, so temperature means the same
    whatever the loss scale (loss changes per round are ~0.01-0.5, losses themselves ~1-5)."""
    filled = _fill_missing(scores)
    mean = sum(filled.values()) / len(filled)
    spread = max(abs(v - mean) for v in filled.values()) or 1.0
    return {t: (v - mean) / spread for t, v in filled.items()}


def learning_progress(history: list[dict[str, float]], temperature: float, floor: float, smoothing: float) -> tuple[dict[str, float], dict]:
    """Favour tasks whose loss fell least or rose: score = exponential moving average of (loss now - loss before)
    over consecutive rounds where both are known (smoothing = weight of the newest change)."""
    tasks = list(history[-1])
    trend: dict[str, float | None] = {}
    for t in tasks:
        ema = None
        for before, now in zip(history, history[1:]):
            if _finite(before.get(t)) and _finite(now.get(t)):
                change = now[t] - before[t]
                ema = change if ema is None else smoothing * change + (1 - smoothing) * ema
        trend[t] = ema
    weights = loss_softmax(_centred(trend), temperature, floor)
    return weights, {"loss_trend": trend}


def ucb(history: list[dict[str, float]], counts: dict[str, int], temperature: float, floor: float, c: float) -> tuple[dict[str, float], dict]:
    """UCB1 over tasks with absolute learning progress |loss before - loss now| as the reward (Graves et al. 2017's
    curriculum signal): mean reward + c * sqrt(2 ln N / n_t), n_t = rows generated for the task so far. A task never
    generated has an unbounded bonus, so it is tried first."""
    tasks = list(history[-1])
    rewards: dict[str, list[float]] = {t: [] for t in tasks}
    for before, now in zip(history, history[1:]):
        for t in tasks:
            if _finite(before.get(t)) and _finite(now.get(t)):
                rewards[t].append(abs(before[t] - now[t]))
    total = sum(counts.get(t, 0) for t in tasks)
    known = [r for rs in rewards.values() for r in rs]
    scale = max(known) if known and max(known) > 0 else 1.0  # rewards in [0, 1], so c is scale-free
    score, bonus = {}, {}
    for t in tasks:
        mean = sum(rewards[t]) / len(rewards[t]) / scale if rewards[t] else 0.0
        n = counts.get(t, 0)
        bonus[t] = c * math.sqrt(2 * math.log(max(total, 1)) / n) if n else math.inf
        score[t] = mean + bonus[t]
    if any(math.isinf(v) for v in score.values()):  # untried tasks share the mass beyond the floor
        untried = [t for t in tasks if math.isinf(score[t])]
        rest = 1 - floor * len(tasks)
        weights = {t: floor + (rest / len(untried) if t in untried else 0.0) for t in tasks}
    else:
        top = max(score.values())
        exp = {t: math.exp((v - top) / temperature) for t, v in score.items()}
        z = sum(exp.values())
        weights = {t: floor + (1 - floor * len(tasks)) * e / z for t, e in exp.items()}
    return weights, {"ucb_score": {t: (None if math.isinf(v) else v) for t, v in score.items()},
                     "mean_reward": {t: (sum(r) / len(r) if r else None) for t, r in rewards.items()},
                     "rows_generated": {t: counts.get(t, 0) for t in tasks}}


def active_uncertainty(uncertainty: dict[str, float | None], temperature: float, floor: float) -> tuple[dict[str, float], dict]:
    """Favour the tasks whose prompts the student is least sure of (Active Instruction Tuning, Kung et al. 2023):
    uncertainty = eval.uncertainty.prompt_uncertainty per task, centred and scaled to [-1, 1] like learning_progress,
    then loss_softmax. The paper picks the top tasks outright; a softmax with a floor keeps every task sampled.
    Tasks without a measure (None or NaN) get the mean, so they are neither favoured nor starved."""
    return loss_softmax(_centred(uncertainty), temperature, floor), {"prompt_uncertainty": dict(uncertainty)}


def sedi_prune(pool: dict[str, list[PoolItem]], rows: list[dict], history: list[dict[str, float]],
               min_per_task: int) -> tuple[dict[str, list[PoolItem]], dict]:
    """SeDi-Instruct's iterative feedback (Kim et al. 2025, arXiv:2502.04774): pool examples whose generated
    children did not help are dropped, those that did are kept. The paper's exact rule is not in the material we
    could read (abstract and summaries; no code published), so a child "helped" when its task's eval loss fell from
    the round before it was trained on to the round after; an example's loss change is the mean over its children.

    rows: kept rows (with 'id', 'task', 'round' and pool ids, see pool_ids; rows without are skipped) of the round
    just evaluated. history: per-task eval loss of every finished round, oldest first, history[r - 1] = round r.
    Round-1 children have no round before them and are not judged. A task never drops below min_per_task examples
    (the prompt shows k of them): its worst examples go first. Returns a new pool (the input is not changed) and
    the evidence: helped, pruned and kept_min examples with their loss change, and what was skipped and why.
    """
    task_of = {item.id: task for task, items in pool.items() for item in items}
    changes: dict[str, list[float]] = {}
    skipped = {"no_pool_ids": [], "not_in_pool": [], "no_loss_change": []}
    for row in rows:
        ids = pool_ids(row)
        if not ids:
            skipped["no_pool_ids"].append(row["id"])
            continue
        change = _loss_change(history, row["round"], row["task"])
        if change is None:
            skipped["no_loss_change"].append(row["id"])
            continue
        for pid in ids:
            if pid in task_of:
                changes.setdefault(pid, []).append(change)
            elif pid not in skipped["not_in_pool"]:
                skipped["not_in_pool"].append(pid)
    judged = [{"id": pid, "task": task_of[pid], "children": len(c), "loss_change": sum(c) / len(c)} for pid, c in changes.items()]
    helped = [e for e in judged if e["loss_change"] < 0]
    pruned, kept_min = [], []
    for task, items in pool.items():
        worst_first = sorted((e for e in judged if e["task"] == task and e["loss_change"] >= 0), key=lambda e: (-e["loss_change"], e["id"]))
        room = max(len(items) - min_per_task, 0)
        pruned += worst_first[:room]
        kept_min += worst_first[room:]
    gone = {e["id"] for e in pruned}
    new_pool = {task: [item for item in items if item.id not in gone] for task, items in pool.items()}
    return new_pool, {"helped": helped, "pruned": pruned, "kept_min": kept_min, "skipped": skipped,
                      "pool_size": {t: [len(pool[t]), len(new_pool[t])] for t in pool}}


def _loss_change(history: list[dict[str, float]], round_idx: int, task: str) -> float | None:
    """Eval loss of task after round round_idx minus after the round before; None when either is unknown."""
    if round_idx > len(history):
        raise ValueError(f"sedi_prune: rows of round {round_idx} but losses for only {len(history)} rounds; "
                         "call it after that round's eval, with every finished round's losses")
    if round_idx < 2:
        return None
    before, after = history[round_idx - 2].get(task), history[round_idx - 1].get(task)
    return after - before if _finite(before) and _finite(after) else None


def next_weights(losses: dict[str, float], cfg: FeedbackConfig, history: list[dict[str, float]] | None = None,
                 counts: dict[str, int] | None = None, uncertainty: dict[str, float] | None = None) -> tuple[dict[str, float], dict]:
    """(weights, evidence). history: earlier rounds' per-task losses, oldest first, without this round's.
    uncertainty: this round's prompt uncertainty per task (eval.uncertainty.prompt_uncertainty), for active_uncertainty.
    sedi_prune weighs tasks like loss_softmax; its pool pruning is a separate call (sedi_prune) the controller makes."""
    if not losses:
        return {}, {}
    if cfg.policy != "uniform" and cfg.floor * len(losses) >= 1:
        raise ValueError(f"feedback.floor={cfg.floor} is too high for {len(losses)} tasks: it must be < {1 / len(losses):.4f}")
    rounds = [*(history or []), losses]
    if cfg.policy == "uniform":
        return uniform(losses), {"loss": losses}
    if cfg.policy == "learning_progress":
        return learning_progress(rounds, cfg.temperature, cfg.floor, cfg.smoothing)
    if cfg.policy == "ucb":
        return ucb(rounds, counts or {}, cfg.temperature, cfg.floor, cfg.ucb_c)
    if cfg.policy == "active_uncertainty":
        if uncertainty is None:
            raise ValueError("feedback.policy=active_uncertainty: no prompt uncertainty was given; pass uncertainty= "
                             "(eval.uncertainty.prompt_uncertainty on the held-out rows) to next_weights")
        return active_uncertainty({t: uncertainty.get(t) for t in losses}, cfg.temperature, cfg.floor)
    return loss_softmax(losses, cfg.temperature, cfg.floor), {"loss": losses}  # loss_softmax and sedi_prune
