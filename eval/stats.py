"""The statistics the loop's decisions and an ablation's verdicts rest on: standard errors of per-task losses,
shrinkage of noisy per-task losses toward their mean, and a paired bootstrap interval.

Pure functions of numbers (numpy only), so each is tested on inputs whose answer is known.
"""
from __future__ import annotations

import math

import numpy as np


def ratio_se(nll_sums: list[float], tokens: list[int]) -> float:
    """Standard error of a token-weighted mean loss, sum(nll) / sum(tokens), with examples as the sampled units.

    Tokens of one answer are not independent draws, so the token count would overstate the evidence; this is the
    usual linearised (delta-method) error of a ratio estimator over examples. NaN with fewer than 2 examples."""
    s, n = np.asarray(nll_sums, float), np.asarray(tokens, float)
    m = len(s)
    if m < 2 or n.sum() <= 0:
        return math.nan
    ratio = s.sum() / n.sum()
    resid = s - ratio * n
    return float(math.sqrt(m / (m - 1) * (resid ** 2).sum()) / n.sum())


def shrink(losses: dict[str, float], ses: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(shrunk losses, weight on each task's own loss): empirical-Bayes shrinkage toward the mean over tasks.

    A task's own loss gets weight tau2 / (tau2 + se^2), tau2 being the spread of the true losses across tasks
    (the variance of the observed losses less their mean squared error, floored at 0). A loss measured on one row
    (no standard error) gets weight 0: it is the mean until the task has evidence. With no spread beyond the noise,
    every task is the mean, and a policy that reads the losses sees no reason to move the weights."""
    known = {t: v for t, v in losses.items() if v is not None and math.isfinite(v)}
    if not known:
        return dict(losses), {t: 0.0 for t in losses}
    mean = float(np.mean(list(known.values())))
    with_se = [t for t in known if _finite(ses.get(t))]
    if len(with_se) < 2:
        return {t: mean if t in known else v for t, v in losses.items()}, {t: 0.0 for t in losses}
    observed = np.array([known[t] for t in with_se])
    noise = np.array([ses[t] ** 2 for t in with_se])
    tau2 = max(float(observed.var(ddof=1) - noise.mean()), 0.0)
    weight = {t: (tau2 / (tau2 + ses[t] ** 2) if tau2 > 0 else 0.0) if t in with_se else 0.0 for t in losses}
    shrunk = {t: mean + weight[t] * (known[t] - mean) if t in known else v for t, v in losses.items()}
    return shrunk, weight


def paired_bootstrap_ci(diffs: list[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, low, high): percentile bootstrap interval of the mean of paired differences (arm minus
    control, seed by seed). With one pair the interval is that one value: there is no spread to resample."""
    d = np.asarray([x for x in diffs if _finite(x)], float)
    if not len(d):
        return math.nan, math.nan, math.nan
    means = np.random.default_rng(seed).choice(d, size=(n_boot, len(d)), replace=True).mean(axis=1)
    alpha = (1 - level) / 2
    return float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_differences(rows: list[dict], control: str, key: str = "final_eval_loss") -> list[dict]:
    """Each arm minus the control, seed by seed, on the final macro eval loss: mean, 95% bootstrap interval, reading."""
    done = {(r["arm"], r["seed"]): r[key] for r in rows if r.get("status") == "done" and r.get(key) is not None}
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        if arm == control:
            continue
        diffs = [done[(arm, s)] - done[(control, s)] for a, s in done if a == arm and (control, s) in done]
        mean, low, high = paired_bootstrap_ci(diffs)
        reading = ("no seed finished in both arms" if not diffs else "one seed: no interval" if len(diffs) < 2
                   else "the interval contains 0: no difference detected" if low <= 0 <= high
                   else f"lower than {control}" if high < 0 else f"higher than {control}")
        out.append({"arm": arm, "seeds": len(diffs), "mean": mean, "low": low, "high": high, "reading": reading})
    return out


def paired_measure(rows: list[dict]) -> tuple[str, str, str]:
    """(summary key, its name, a note): the test set's macro loss when the runs have one, else the eval loss."""
    if any(r.get("final_test_loss") is not None for r in rows):
        return "final_test_loss", "macro test loss", "Every arm is scored on the same test rows (eval.test_path); negative is better (lower loss)."
    return "final_eval_loss", "macro eval loss", ("Each arm is scored on its own held-out generated rows, so a difference mixes the arms' "
                                                 "policies with the rows they were scored on; negative is better (lower loss).")


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
