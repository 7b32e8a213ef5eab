"""The statistics the loop's decisions and an ablation's verdicts rest on: standard errors of per-task losses,
shrinkage of noisy per-task losses toward their mean, and a paired bootstrap interval.

Pure functions of numbers (numpy only), so each is tested on inputs whose answer is known.
"""
from __future__ import annotations

import math

import numpy as np


def macro_mean(losses) -> float | None:
    """Mean over tasks of their losses, those without a finite one left out (not NaN); None when none has one."""
    vals = [v for v in losses if _finite(v)]
    return sum(vals) / len(vals) if vals else None


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
    """(shrunk losses, weight on each task's own loss): empirical-Bayes shrinkage toward the mean over the tasks that
    have a standard error.

    A task's own loss gets weight tau2 / (tau2 + se^2), tau2 being the spread of the true losses across tasks
    (the variance of the observed losses less their mean squared error, floored at 0). A loss measured on one row
    (no standard error) gets weight 0: it is the mean until the task has evidence. With no spread beyond the noise,
    every task is the mean, and a policy that reads the losses sees no reason to move the weights."""
    known = {t: v for t, v in losses.items() if v is not None and math.isfinite(v)}
    if not known:
        return dict(losses), {t: 0.0 for t in losses}
    with_se = [t for t in known if _finite(ses.get(t))]
    if len(with_se) < 2:
        mean = float(np.mean(list(known.values())))
        return {t: mean if t in known else v for t, v in losses.items()}, {t: 0.0 for t in losses}
    mean = float(np.mean([known[t] for t in with_se]))  # the target: tasks with evidence, not one-row losses
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


# Two-sided 95% quantiles of Student's t by degrees of freedom (no scipy in the dependencies); 1.96 beyond 30.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def paired_t_ci(diffs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t interval of the mean paired difference. With 2-3 seeds the percentile bootstrap
    can be no wider than the seeds' own range (it covers the mean about half the time with 2); this one widens with
    the t quantile instead. NaN bounds with fewer than 2 pairs."""
    d = np.asarray([x for x in diffs if _finite(x)], float)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan), math.nan, math.nan
    half = (_T975[len(d) - 2] if len(d) - 1 <= len(_T975) else 1.96) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


# One-sided 80% quantiles of Student's t (power 0.8) by degrees of freedom; 0.842 beyond 30.
_T80 = [1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879, 0.876, 0.873, 0.870, 0.868, 0.866,
        0.865, 0.863, 0.862, 0.861, 0.860, 0.859, 0.858, 0.858, 0.857, 0.856, 0.856, 0.855, 0.855, 0.854, 0.854]


def detectable_effect(diffs: list[float]) -> float:
    """The smallest true mean paired difference that this many seeds, with the spread they showed, would find (a 95%
    t interval excluding 0) 80% of the time: (t_0.975 + t_0.80) * sd / sqrt(n). What a null result rules out."""
    d = np.asarray([x for x in diffs if _finite(x)], float)
    if len(d) < 2:
        return math.nan
    df = len(d) - 1
    t = (_T975[df - 1] if df <= len(_T975) else 1.96) + (_T80[df - 1] if df <= len(_T80) else 0.842)
    return float(t * d.std(ddof=1) / math.sqrt(len(d)))


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
