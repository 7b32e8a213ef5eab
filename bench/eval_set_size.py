"""How many eval rows per task a usable per-task loss needs, measured on finished runs.

Run: python bench/eval_set_size.py runs/ablations/policies

For every run under the folder (any metrics.jsonl), every round and task with a standard error: the per-row spread
implied by it, sd = se * sqrt(n), for validation and test. Then the spread of the true per-task losses across
tasks, tau (variance of the observed losses less their mean squared error, as eval/stats.shrink estimates it), and
the rows per task at which se falls to tau (the shrinkage weight on a task's own loss reaches 1/2) and to tau/2
(weight 4/5). Prints medians over rounds and runs; reads files only.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path


def rounds(folder: Path):
    for path in sorted(folder.rglob("metrics.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


def main(folder: str) -> None:
    ms = list(rounds(Path(folder)))
    if not ms:
        raise SystemExit(f"no metrics.jsonl under {folder}")
    for name, loss_key, se_key, n_key in (("validation", "task_eval_loss", "task_eval_se", "task_eval_n"),
                                          ("test", "test_task_loss", "test_task_se", "test_task_n")):
        sds: dict[str, list[float]] = {}
        ses: dict[str, list[float]] = {}
        taus, ses_all = [], []
        for m in ms:
            loss, se, n = m.get(loss_key) or {}, m.get(se_key) or {}, m.get(n_key) or {}
            have = [t for t in se if se[t] is not None and loss.get(t) is not None and n.get(t)]
            for t in have:
                sds.setdefault(t, []).append(se[t] * math.sqrt(n[t]))
                ses.setdefault(t, []).append(se[t])
                ses_all.append(se[t])
            if len(have) >= 2:
                var = statistics.variance([loss[t] for t in have]) - statistics.fmean([se[t] ** 2 for t in have])
                taus.append(math.sqrt(max(var, 0.0)))
        if not sds:
            print(f"{name}: no standard errors logged")
            continue
        print(f"{name}: {len(ms)} rounds")
        print(f"  {'task':<20} {'rows':>5} {'median se':>10} {'median per-row sd':>18}")
        for t, v in sorted(sds.items()):
            rows = [(m.get(n_key) or {}).get(t) for m in ms if (m.get(n_key) or {}).get(t)]
            print(f"  {t:<20} {statistics.median(rows):>5.0f} {statistics.median(ses[t]):>10.3f} {statistics.median(v):>18.3f}")
        sd = statistics.median([x for v in sds.values() for x in v])
        tau = statistics.median(taus) if taus else math.nan
        print(f"  median per-row sd {sd:.3f}; median se {statistics.median(ses_all):.3f}; spread of true task losses tau {tau:.3f}")
        for target, label in ((tau, "se = tau (own weight 1/2)"), (tau / 2, "se = tau/2 (own weight 4/5)"), (0.2, "se = 0.2 nats")):
            if target > 0:
                print(f"  rows per task for {label}: {math.ceil((sd / target) ** 2)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/ablations/policies")
