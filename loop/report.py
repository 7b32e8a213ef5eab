"""`daig report`: one self-contained HTML file (PNG plots inlined as base64) for a run or an ablation.

Run: daig report runs/quickstart                      (writes runs/quickstart/report.html)
     daig report runs/ablations/policies --out policies.html

It reads only what the loop writes: config.yaml, metrics.jsonl and rounds/<r>/{data,rejected}.jsonl, and for an
ablation folder also summary.jsonl (one line per arm x seed, written by `daig ablate`). Runs made by older versions
lack some keys; those show as blanks or a missing plot, never an error.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from loop.paired import control_arm, paired_differences, paired_measure  # noqa: E402
from loop.runfolder import METRICS, read_config, read_jsonl, round_dir, round_numbers  # noqa: E402

log = logging.getLogger("daig")

EXAMPLES_PER_ROUND = 3  # kept and rejected rows shown per round
TEXT_CHARS = 400  # longer texts are cut in the example tables
MAX_LINES = 12  # more tasks than this: heatmaps instead of one colour per task


# ---------------------------------------------------------------- reading

@dataclass
class RunData:
    path: Path
    config: dict
    metrics: list[dict]  # one per finished round, in order
    kept: dict[int, list[dict]]  # round -> rows of rounds/<r>/data.jsonl
    rejected: dict[int, list[dict]]


def load_run(path: str | Path) -> RunData:
    p = Path(path)
    if not (p / METRICS).exists():
        raise FileNotFoundError(f"{p} has no {METRICS}: not a run folder (`daig run --out` writes one) "
                                f"nor an ablation folder (`daig ablate` writes summary.jsonl)")
    metrics = sorted(read_jsonl(p / METRICS), key=lambda m: m.get("round", 0))
    rounds = round_numbers(p)
    kept = {r: read_jsonl(round_dir(p, r) / "data.jsonl") for r in rounds}
    rejected = {r: read_jsonl(round_dir(p, r) / "rejected.jsonl") for r in rounds}
    return RunData(p, read_config(p), metrics, kept, rejected)


def macro_loss(m: dict) -> float | None:
    """Mean of the per-task eval losses of one round (tasks without held-out rows left out)."""
    values = [v for v in (m.get("task_eval_loss") or {}).values() if v is not None]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------- plots

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _nan(x) -> float:
    return math.nan if x is None else float(x)


def _colors(names: list[str]) -> dict[str, tuple]:
    """One stable colour per name across every plot of the report."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _short(s: str, n: int = 28) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _legend_right(ax) -> None:
    """Outside the axes, so it never covers data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _tasks(metrics: list[dict]) -> list[str]:
    return sorted({t for m in metrics for key in ("task_weights", "next_task_weights", "task_eval_loss") for t in (m.get(key) or {})})


def plot_task_weights(metrics: list[dict], colors: dict) -> str | None:
    """The sampling weight of each task in each round, and the weights chosen for the next round: stacked bars,
    or a heatmap when there are too many tasks for distinct colours."""
    cols = [(str(m["round"]), m.get("task_weights") or {}) for m in metrics]
    if metrics and metrics[-1].get("next_task_weights"):
        cols.append(("next", metrics[-1]["next_task_weights"]))
    cols = [(label, w) for label, w in cols if w]
    if not cols:
        return None
    tasks = sorted({t for _, w in cols for t in w})
    xlabel, title = "round (next = chosen after the last round)", "Task weights per round"
    if len(tasks) > MAX_LINES:
        return _heatmap([[_nan(w.get(t)) for _, w in cols] for t in tasks], tasks, [label for label, _ in cols], "sampling weight", xlabel, title)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = range(len(cols))
    bottom = [0.0] * len(cols)
    for t in tasks:
        h = [0.0 if w.get(t) is None else w[t] for _, w in cols]
        ax.bar(x, h, bottom=bottom, color=colors[t], label=_short(t), width=0.7, edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, h)]
    ax.set_xticks(list(x), [label for label, _ in cols])
    ax.set(xlabel=xlabel, ylabel="sampling weight", ylim=(0, 1.02), title=title)
    _legend_right(ax)
    return _png(fig)


def plot_task_loss(metrics: list[dict], colors: dict) -> str | None:
    """Per-task eval loss over rounds, with the macro mean (a heatmap when there are many tasks); a task without
    held-out rows in a round is a gap."""
    tasks = sorted({t for m in metrics for t, v in (m.get("task_eval_loss") or {}).items() if v is not None})
    if not tasks:
        return None
    rounds = [m["round"] for m in metrics]
    if len(tasks) > MAX_LINES:
        rows = [[_nan((m.get("task_eval_loss") or {}).get(t)) for m in metrics] for t in tasks]
        return _heatmap(rows + [[_nan(macro_loss(m)) for m in metrics]], tasks + ["MACRO MEAN"], [str(r) for r in rounds],
                        "eval loss (held-out rows)", "round", "Per-task eval loss (grey: no held-out rows)")
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for t in tasks:
        ax.plot(rounds, [_nan((m.get("task_eval_loss") or {}).get(t)) for m in metrics], marker="o", ms=4, color=colors[t], label=_short(t))
    ax.plot(rounds, [_nan(macro_loss(m)) for m in metrics], color="black", ls="--", lw=2, marker="s", ms=5, label="macro mean\n(tasks with\nheld-out rows)")
    ax.set_xticks(rounds)
    ax.set(xlabel="round", ylabel="eval loss (held-out rows)", title="Per-task eval loss")
    ax.grid(alpha=0.3)
    _legend_right(ax)
    return _png(fig)


def _heatmap(rows: list[list[float]], row_labels: list[str], col_labels: list[str], value: str, xlabel: str, title: str) -> str:
    """Tasks down, rounds across; missing values grey. Its height grows with the number of tasks so labels never overlap."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 + 0.6 * len(col_labels)), 1.2 + 0.22 * len(row_labels)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(np.array(rows, dtype=float)), aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), [_short(t, 40) for t in row_labels], fontsize=8)
    ax.set(xlabel=xlabel, title=title)
    fig.colorbar(im, ax=ax, label=value, fraction=0.05, pad=0.02)
    return _png(fig)


def plot_rejections(metrics: list[dict]) -> str | None:
    """Stacked bars per round: kept rows and each rejection reason; the keep rate above each bar."""
    if not metrics or all(m.get("n_kept") is None for m in metrics):
        return None
    reasons = sorted({k for m in metrics for k, n in (m.get("rejected") or {}).items() if n})
    rounds = [m["round"] for m in metrics]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    kept = [m.get("n_kept") or 0 for m in metrics]
    ax.bar(rounds, kept, color="#2ca02c", label="kept", width=0.6)
    bottom = list(kept)
    cmap = plt.get_cmap("Set2" if len(reasons) <= 8 else "tab20")
    for i, reason in enumerate(reasons):
        h = [(m.get("rejected") or {}).get(reason, 0) for m in metrics]
        ax.bar(rounds, h, bottom=bottom, color=cmap(i % cmap.N), label=_short(reason, 34), width=0.6, edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, h)]
    for r, k, total, m in zip(rounds, kept, bottom, metrics):
        gen = m.get("n_generated") or total
        ax.annotate(f"{k}/{gen} kept", (r, total), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(rounds)
    ax.set_ylim(0, max(bottom + [1]) * 1.15)  # room for the labels
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="round", ylabel="rows", title="Kept rows and rejection reasons")
    _legend_right(ax)
    return _png(fig)


def plot_teacher(metrics: list[dict]) -> str | None:
    """Teacher cost per round: requests (paid calls vs cache hits), paid tokens (prompt vs completion), dollars when priced."""
    if not metrics or all(m.get("teacher_calls") is None for m in metrics):
        return None
    rounds = [m["round"] for m in metrics]
    priced = any(m.get("cost_usd") for m in metrics)
    fig, axes = plt.subplots(1, 3 if priced else 2, figsize=(10.5 if priced else 8, 3.4))
    calls = [m.get("teacher_calls") or 0 for m in metrics]
    _stacked(axes[0], rounds, [("paid calls", calls, "#1f77b4"), ("cache hits", [m.get("cache_hits") or 0 for m in metrics], "#aec7e8")])
    axes[0].set(ylabel="requests", title="Teacher requests")
    if any(m.get("teacher_prompt_tokens") is not None for m in metrics):
        parts = [("prompt", [m.get("teacher_prompt_tokens") or 0 for m in metrics], "#ff7f0e"),
                 ("completion", [m.get("teacher_completion_tokens") or 0 for m in metrics], "#ffbb78")]
    else:
        parts = [("tokens", [m.get("teacher_tokens") or 0 for m in metrics], "#ff7f0e")]
    _stacked(axes[1], rounds, parts)
    axes[1].set(ylabel="tokens", title="Teacher tokens (paid calls)")
    if not any(calls):  # an empty axis explains itself
        axes[1].text(0.5, 0.5, "no paid calls:\nevery request came from the cache", transform=axes[1].transAxes, ha="center", va="center")
        axes[1].set_yticks([])
    if priced:
        _stacked(axes[2], rounds, [("USD", [m.get("cost_usd") or 0 for m in metrics], "#d62728")])
        axes[2].set(ylabel="USD", title="Teacher cost")
    fig.tight_layout()
    return _png(fig)


def _stacked(ax, rounds: list[int], parts: list[tuple[str, list[float], str]]) -> None:
    """Stacked bars with headroom above them for a one-row legend, so the legend never covers a bar."""
    bottom = [0.0] * len(rounds)
    for label, values, color in parts:
        ax.bar(rounds, values, bottom=bottom, color=color, label=label, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylim(0, max(bottom + [0]) * 1.25 or 1)
    if len(parts) > 1:
        ax.legend(fontsize=8, loc="upper center", ncol=len(parts), frameon=False)
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.grid(axis="y", alpha=0.3)


def plot_benchmark(metrics: list[dict]) -> str | None:
    """Held-out benchmark ROUGE-L of each round's adapter against the base model's."""
    pts = [(m["round"], m["benchmark_rouge_l"]) for m in metrics if m.get("benchmark_rouge_l") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r for r, _ in pts], [v for _, v in pts], marker="o", color="#9467bd", label="adapter")
    base = next((m["benchmark_rouge_l_base"] for m in metrics if m.get("benchmark_rouge_l_base") is not None), None)
    if base is not None:
        ax.axhline(base, color="gray", ls="--", label=f"base model ({base:.3f})")
    ax.set_xticks([m["round"] for m in metrics])
    _rouge_ylim(ax, [v for _, v in pts] + ([base] if base is not None else []))
    ax.set(xlabel="round", ylabel="ROUGE-L", title="Benchmark ROUGE-L")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def _rouge_ylim(ax, values: list[float]) -> None:
    """ROUGE-L lives in [0, 1]: start the axis near 0 (all-zero scores otherwise get a symmetric, negative axis)."""
    top = max(values + [0.0])
    top = min(1.0, top * 1.2) if top > 0 else 1.0
    ax.set_ylim(-0.03 * top, top)  # a little below 0, so a line of zeros stays visible


# ---------------------------------------------------------------- HTML pieces

CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}td.text{max-width:420px;white-space:pre-wrap}
img{display:block;margin:8px 0 20px;max-width:100%}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}.note{color:#666;font-size:13px}"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x))


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:,.0f}"
    return str(x)


def _cut(s, n: int = TEXT_CHARS) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[:n] + f"… [{len(s) - n} more chars]"


def img(b64: str | None, alt: str, missing: str) -> str:
    if b64 is None:
        return f'<p class="note">{esc(missing)}</p>'
    return f'<img src="data:image/png;base64,{b64}" alt="{esc(alt)}">'


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset(), caption: str = "") -> str:
    """Cells are escaped here; numbers are formatted and right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{esc(fmt(c))}</td>' if i in numeric else f'<td class="text">{esc(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    cap = f'<caption style="text-align:left">{esc(caption)}</caption>' if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def filters_text(filters) -> str:
    """One line per filter decision; older runs stored a flat dict of scores instead of a list of decisions."""
    if isinstance(filters, dict):
        return "; ".join(f"{k}={v}" for k, v in filters.items())
    lines = []
    for d in filters or []:
        verdict = "kept" if d.get("kept") else f"rejected ({d.get('reason') or '?'})"
        score = f", score {d['score']:.3g}" if isinstance(d.get("score"), (int, float)) else ""
        top = d.get("top_similar") or []
        nearest = f"; nearest: {_cut(top[0][0], 80)!r} ({top[0][1]:.2f})" if top and len(top[0]) == 2 else ""
        lines.append(f"{d.get('filter', '?')}: {verdict}{score}{nearest}")
    return "\n".join(lines)


def _spread(rows: list[dict], key: str, n: int) -> list[dict]:
    """Up to n rows, the first of each distinct value of key first (each task, each reason), then the rest in file order."""
    first: dict = {}
    for i, r in enumerate(rows):
        first.setdefault(r.get(key), i)
    lead = sorted(first.values())
    order = lead + [i for i in range(len(rows)) if i not in set(lead)]
    return [rows[i] for i in order[:n]]


def examples_html(run: RunData, n: int = EXAMPLES_PER_ROUND) -> str:
    parts = []
    for r in sorted(set(run.kept) | set(run.rejected)):
        kept, rejected = run.kept.get(r, []), run.rejected.get(r, [])
        parts.append(f"<h4>Round {r}: {len(kept)} kept, {len(rejected)} rejected</h4>")
        if kept:
            parts.append(table(["id", "task", "instruction (+ input)", "output", "filters"],
                               [[x.get("id"), x.get("task"), _cut(_instruction(x)), _cut(x.get("output")), filters_text(x.get("filters"))]
                                for x in _spread(kept, "task", n)], caption="kept"))
        if rejected:
            parts.append(table(["id", "task", "reason", "stage", "teacher text (raw)", "filters"],
                               [[x.get("id"), x.get("task"), x.get("reason"), x.get("stage"), _cut(x.get("raw", x.get("instruction"))),
                                 filters_text(x.get("filters"))] for x in _spread(rejected, "reason", n)], caption="rejected"))
    return "\n".join(parts) or '<p class="note">no rounds/ folder</p>'


def _instruction(row: dict) -> str:
    return row.get("instruction", "") + (f"\n\nInput: {row['input']}" if row.get("input") else "")


# ---------------------------------------------------------------- one run

METRIC_COLUMNS = [("round", "round"), ("n_generated", "generated"), ("n_kept", "kept"), ("keep_rate", "keep rate"),
                  ("eval_loss", "eval loss (tokens)"), ("macro_loss", "eval loss (macro)"), ("sample_rouge_l", "sample ROUGE-L"),
                  ("benchmark_rouge_l", "bench ROUGE-L"), ("train_loss", "train loss"), ("teacher_calls", "teacher calls"),
                  ("cache_hits", "cache hits"), ("teacher_tokens", "teacher tokens"), ("cost_usd", "cost USD"),
                  ("calls_per_kept", "calls / kept"), ("seconds", "seconds")]


def metrics_table(metrics: list[dict]) -> str:
    rows = []
    for m in metrics:
        derived = {"keep_rate": m["n_kept"] / m["n_generated"] if m.get("n_generated") and m.get("n_kept") is not None else None,
                   "macro_loss": macro_loss(m)}
        rows.append([derived[k] if k in derived else m.get(k) for k, _ in METRIC_COLUMNS])
    return table([h for _, h in METRIC_COLUMNS], rows, numeric=set(range(len(METRIC_COLUMNS))))


def task_table(metrics: list[dict]) -> str:
    """Per task: the weight it was sampled with and its eval loss in each round, and the weight chosen next."""
    header = ["task"] + [f"r{m['round']} {k}" for m in metrics for k in ("weight", "loss")] + ["next weight"]
    rows = [[t] + [x for m in metrics for x in ((m.get("task_weights") or {}).get(t), (m.get("task_eval_loss") or {}).get(t))]
            + [(metrics[-1].get("next_task_weights") or {}).get(t) if metrics else None] for t in _tasks(metrics)]
    return table(header, rows, numeric=set(range(1, len(header))))


def evidence_html(metrics: list[dict]) -> str:
    """What each round's feedback policy based the next weights on: per-task numbers as a table, anything else as JSON."""
    tasks = set(_tasks(metrics))
    columns, other = [], []
    for m in metrics:
        for key, value in (m.get("feedback_evidence") or {}).items():
            per_task = isinstance(value, dict) and value and set(value) <= tasks and all(
                v is None or isinstance(v, (int, float)) for v in value.values())
            if per_task and key != "loss":  # the loss is in the table above
                columns.append((f"r{m['round']} {key}", value))
            elif not per_task:
                other.append(f"round {m['round']} {key}: {json.dumps(value, ensure_ascii=False)}")
    if not columns and not other:
        return '<p class="note">the policy logged no evidence beyond the losses above</p>'
    parts = [table(["task"] + [c for c, _ in columns], [[t] + [v.get(t) for _, v in columns] for t in sorted(tasks)],
                   numeric=set(range(1, len(columns) + 1)))] if columns else []
    if other:
        parts.append("<details><summary>other evidence</summary><pre>" + esc(_cut("\n".join(other), 20000)) + "</pre></details>")
    return "\n".join(parts)


def run_summary(run: RunData) -> list[tuple[str, str]]:
    g, fb = run.config.get("generation") or {}, run.config.get("feedback") or {}
    m = run.metrics[-1] if run.metrics else {}
    return [("method", g.get("method", "daig")), ("feedback policy", fb.get("policy", "")),
            ("student", run.config.get("student", "")), ("teacher", (g.get("teacher") or {}).get("model", "")),
            ("rounds done", f"{len(run.metrics)} of {run.config.get('rounds', '?')}"),
            ("examples per round", (g.get("daig") or {}).get("examples_per_round", "")), ("novelty filter", (g.get("novelty") or {}).get("filter", "")),
            ("seed", run.config.get("seed", "")), ("eval sets", m.get("eval_sets_from") or "none"),
            ("run teacher calls", m.get("run_teacher_calls", "")),
            ("run teacher tokens", m.get("run_teacher_tokens", "")), ("run cost USD", m.get("run_cost_usd", ""))]


def run_sections(run: RunData, level: int = 2) -> str:
    """Every plot and table of one run, headed at the given HTML level."""
    h = f"h{level}"
    colors = _colors(_tasks(run.metrics))
    parts = [table(["setting", "value"], [[k, v] for k, v in run_summary(run)])]
    if not run.metrics:
        parts.append('<p class="note">metrics.jsonl has no finished round yet.</p>')
    parts += [f"<{h}>Task weights</{h}>", img(plot_task_weights(run.metrics, colors), "task weights", "no task weights logged"),
              f"<{h}>Per-task eval loss</{h}>", img(plot_task_loss(run.metrics, colors), "per-task eval loss",
                                                   "no eval loss yet (no round had held-out rows)"),
              f"<{h}>Keep rate and rejection reasons</{h}>", img(plot_rejections(run.metrics), "rejections", "no generation counts logged"),
              f"<{h}>Teacher calls, tokens, cost</{h}>", img(plot_teacher(run.metrics), "teacher cost", "no teacher ledger logged"),
              f"<{h}>Benchmark ROUGE-L</{h}>", img(plot_benchmark(run.metrics), "benchmark",
                                                  "no benchmark in this run (set eval.benchmark_path to score one)"),
              f"<{h}>Metrics per round</{h}>", metrics_table(run.metrics),
              f"<{h}>Per task: sampling weight and eval loss</{h}>", task_table(run.metrics),
              f"<{h}>Feedback evidence</{h}>", evidence_html(run.metrics),
              f"<{h}>Examples (up to {EXAMPLES_PER_ROUND} kept and {EXAMPLES_PER_ROUND} rejected per round)</{h}>", examples_html(run),
              "<details><summary>config.yaml</summary><pre>" + esc(yaml.safe_dump(run.config, sort_keys=False)) + "</pre></details>"]
    return "\n".join(parts)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title><style>{CSS}</style></head>'
            f"<body>\n<h1>{esc(title)}</h1>\n{body}\n</body></html>\n")


# ---------------------------------------------------------------- an ablation

SUMMARY_VALUES = [("final_eval_loss", "final eval loss"), ("final_test_loss", "final test loss"), ("final_test_rouge_l", "test ROUGE-L"),
                  ("final_test_judge", "test judge score"), ("final_sample_rouge_l", "sample ROUGE-L"),
                  ("final_benchmark_rouge_l", "bench ROUGE-L"),
                  ("kept", "rows kept"), ("teacher_requests", "teacher requests"), ("teacher_calls", "paid calls"), ("teacher_tokens", "paid tokens"),
                  ("cost_usd", "cost USD"), ("wall_seconds", "wall seconds")]


def _mean_std(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return ""
    return fmt(float(v[0])) if len(v) == 1 else f"{fmt(statistics.mean(v))} ± {fmt(statistics.stdev(v), 2)}"


def arm_table(summary: list[dict]) -> str:
    """Per arm: mean ± sample std over its finished seeds."""
    rows = []
    for arm in dict.fromkeys(s["arm"] for s in summary):
        runs = [s for s in summary if s["arm"] == arm]
        done = [s for s in runs if s.get("status") == "done"]
        # what defines the arm: overrides every seed shares, less tracking names (seed= and run names differ per seed)
        overrides = " ".join(o for o in runs[0].get("overrides") or []
                             if all(o in (r.get("overrides") or []) for r in runs) and not o.startswith("tracking."))
        rows.append([arm, overrides, f"{len(done)} done" + (f", {len(runs) - len(done)} failed" if len(done) < len(runs) else "")]
                    + [_mean_std([s.get(k) for s in done]) for k, _ in SUMMARY_VALUES])
    return table(["arm", "overrides", "seeds"] + [h for _, h in SUMMARY_VALUES], rows, numeric=set(range(3, 3 + len(SUMMARY_VALUES))))


def plot_cost_quality(summary: list[dict], colors: dict) -> str | None:
    """One dot per seed, the arm mean as a large diamond under its dots.

    x is teacher requests (paid + served from the cache) when the runs logged them: arms sharing one cache pay once
    for identical requests, so paid calls and tokens depend on which arm ran first. Else paid tokens, else paid calls.
    """
    done = [s for s in summary if s.get("status") == "done"]
    x_key = next((k for k in ("teacher_requests", "teacher_tokens") if done and all(s.get(k) for s in done)), "teacher_calls")
    x_label = {"teacher_requests": "teacher requests per run (paid + cached)", "teacher_tokens": "paid teacher tokens per run",
               "teacher_calls": "paid teacher calls per run"}[x_key]
    ys = [(k, label) for k, label in (("final_eval_loss", "final macro eval loss (lower is better)"),
                                      ("final_benchmark_rouge_l", "benchmark ROUGE-L (higher is better)"))
          if any(s.get(k) is not None and s.get(x_key) is not None for s in done)]
    if not ys:
        return None
    fig, axes = plt.subplots(1, len(ys), figsize=(5.2 * len(ys) + 1.6, 3.8), squeeze=False)
    for ax, (y_key, y_label) in zip(axes[0], ys):
        for arm, color in colors.items():
            pts = [(s[x_key], s[y_key]) for s in done if s["arm"] == arm and s.get(x_key) is not None and s.get(y_key) is not None]
            if not pts:
                continue
            ax.scatter([statistics.mean(p[0] for p in pts)], [statistics.mean(p[1] for p in pts)], color=color, marker="D", s=110,
                       alpha=0.7, edgecolor="black", linewidth=1, label=_short(arm, 34), zorder=2)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, s=26, edgecolor="white", linewidth=0.8, zorder=3)
        if "rouge" in y_key:
            _rouge_ylim(ax, [s[y_key] for s in done if s.get(y_key) is not None])
        ax.set(xlabel=x_label, ylabel=y_label)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="arm (◆ = mean)")
    fig.suptitle("Cost vs quality: one dot per seed")
    fig.tight_layout()
    return _png(fig)


def plot_arm_curves(runs: dict[str, list[tuple[int, RunData]]], colors: dict) -> str | None:
    """Macro eval loss, test loss and benchmark ROUGE-L (those logged) over rounds: thin line per seed, thick line the arm mean."""
    series = [("macro eval loss", macro_loss), ("macro test loss", lambda m: m.get("test_macro_loss")),
              ("benchmark ROUGE-L", lambda m: m.get("benchmark_rouge_l"))]
    series = [(name, f) for name, f in series if any(f(m) is not None for rs in runs.values() for _, r in rs for m in r.metrics)]
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(5.2 * len(series) + 1.6, 3.6), squeeze=False)
    for ax, (name, f) in zip(axes[0], series):
        for arm, seeds in runs.items():
            if not seeds:  # every seed of the arm failed: nothing to draw, and no empty legend entry
                continue
            by_round: dict[int, list[float]] = {}
            for _, run in seeds:
                pts = [(m["round"], f(m)) for m in run.metrics]
                ax.plot([p[0] for p in pts], [_nan(p[1]) for p in pts], color=colors[arm], alpha=0.35, lw=1)
                for r, v in pts:
                    if v is not None:
                        by_round.setdefault(r, []).append(v)
            rounds = sorted(by_round)
            ax.plot(rounds, [statistics.mean(by_round[r]) for r in rounds], color=colors[arm], lw=2.5, marker="o", ms=4, label=_short(arm, 34))
        if "ROUGE" in name:
            _rouge_ylim(ax, [v for seeds in runs.values() for _, run in seeds for v in map(f, run.metrics) if v is not None])
        ax.set(xlabel="round", ylabel=name, title=f"{name} per round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="arm (thin = seed)")
    fig.tight_layout()
    return _png(fig)


def plot_test_vs_requests(runs: dict[str, list[tuple[int, RunData]]], colors: dict) -> str | None:
    """Macro test loss after each round against the teacher requests made so far (paid + cached): arms compared at
    equal budget. Thin line per seed, markers at the arm's mean per round."""
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    drawn = False
    for arm, seeds in runs.items():
        by_round: dict[int, list[tuple[float, float]]] = {}
        for _, run in seeds:
            pts = [(m["round"], m.get("run_teacher_requests"), m.get("test_macro_loss")) for m in run.metrics]
            pts = [p for p in pts if p[1] is not None and p[2] is not None]
            if pts:
                ax.plot([p[1] for p in pts], [p[2] for p in pts], color=colors[arm], alpha=0.35, lw=1)
            for r, x, y in pts:
                by_round.setdefault(r, []).append((x, y))
        if by_round:
            drawn = True
            rounds = sorted(by_round)
            ax.plot([statistics.mean(x for x, _ in by_round[r]) for r in rounds], [statistics.mean(y for _, y in by_round[r]) for r in rounds],
                    color=colors[arm], lw=2.5, marker="o", ms=4, label=_short(arm, 34))
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="teacher requests so far (paid + cached)", ylabel="macro test loss", title="Test loss at equal teacher budget")
    ax.grid(alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return _png(fig)


def ablation_html(path: Path) -> str:
    summary = read_jsonl(path / "summary.jsonl")
    if not summary:
        raise FileNotFoundError(f"{path / 'summary.jsonl'} is empty; `daig ablate` writes a line per finished arm x seed")
    arms = list(dict.fromkeys(s["arm"] for s in summary))
    colors = _colors(arms)
    runs: dict[str, list[tuple[int, RunData]]] = {a: [] for a in arms}
    for s in summary:
        run_dir = path / s.get("run_dir", "")
        if s.get("run_dir") and (run_dir / "metrics.jsonl").exists():
            run = load_run(run_dir)
            runs[s["arm"]].append((s.get("seed"), run))
            s.setdefault("teacher_requests", run.metrics[-1].get("run_teacher_requests") if run.metrics else None)
    spec = (path / "ablation.yaml").read_text(encoding="utf-8") if (path / "ablation.yaml").exists() else ""
    control = control_arm(arms, str((yaml.safe_load(spec) or {}).get("control") or "") if spec else "")
    key, what, note = paired_measure(summary)
    paired = [[d["arm"], d["seeds"], d["mean"], d["low"], d["high"], d["boot_low"], d["boot_high"], d["detectable"], d["reading"]]
              for d in paired_differences(summary, control, key)]
    parts = ["<h2>Summary per arm (mean ± std over seeds)</h2>", arm_table(summary),
             f"<h2>Paired difference to {esc(control)} ({what}, seed by seed)</h2>",
             table(["arm", "seeds paired", "mean", "t 95% low", "t 95% high", "bootstrap 95% low", "bootstrap 95% high",
                    "smallest detectable (80% power)", "reading"], paired, numeric={1, 2, 3, 4, 5, 6, 7}),
             f'<p class="note">{esc(note)}</p>',
             '<p class="note">Teacher requests count every request an arm made (paid or served from the cache); paid calls and '
             "tokens count only what was sent: arms sharing one teacher cache pay once for identical requests, so an arm "
             "run later looks cheaper by those two.</p>",
             "<h2>Cost vs quality</h2>", img(plot_cost_quality(summary, colors), "cost vs quality", "no finished run has a final metric"),
             "<h2>Curves per arm</h2>", img(plot_arm_curves(runs, colors), "curves per arm", "no run has eval losses yet"),
             "<h2>Test loss against teacher requests</h2>", img(plot_test_vs_requests(runs, colors), "test loss vs teacher requests", "no run has a test set"),
             "<h2>Every run</h2>",
             table(["arm", "seed", "run_dir", "status", "rounds", "stopped"] + [h for _, h in SUMMARY_VALUES],
                   [[s["arm"], s.get("seed"), s.get("run_dir"), s.get("status"), s.get("rounds"), s.get("stopped")]
                    + [s.get(k) for k, _ in SUMMARY_VALUES] for s in summary],
                   numeric={1, 4} | set(range(6, 6 + len(SUMMARY_VALUES)))),
             "<details><summary>ablation.yaml</summary><pre>" + esc(spec) + "</pre></details>",
             "<h2>Runs in detail</h2>"]
    for arm, seeds in runs.items():
        for seed, run in seeds:
            where = run.path.relative_to(path).as_posix()
            parts.append(f"<details><summary>{esc(arm)}, seed {esc(seed)} ({esc(where)})</summary>{run_sections(run, level=4)}</details>")
    return page(f"Ablation report: {path.name}", "\n".join(parts))


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the report for a run folder or an ablation folder; returns the HTML file's path."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is not a folder; give a run folder (daig run --out) or an ablation folder (daig ablate)")
    text = ablation_html(p) if (p / "summary.jsonl").exists() else page(f"Run report: {p.name}", run_sections(load_run(p)))
    target = Path(out) if out else p / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
