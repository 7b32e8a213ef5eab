"""daig export-data RUN_DIR --out DIR [--push-to-hub USER/NAME] [--private | --public] [--license ID]: a run's rows as
a Hugging Face dataset.

Splits: train (every kept row of every round), validation and test (the run's fixed eval sets, where it has them) and
rejected (every rejected row, with its stage, reason and the teacher's raw text). Each row has a `messages` column,
[user: prompt, assistant: answer] exactly as the student trained on it (training/sft.py student_row), and its
provenance as columns: one schema for every split and method, the parts that vary between methods kept as JSON text.

DIR holds the DatasetDict (save_to_disk: `datasets.load_from_disk(DIR)`), the same splits as Parquet under data/,
the dataset card README.md (huggingface_hub's DatasetCard) and the run's resolved config.yaml; --push-to-hub uploads
the last three in one commit. DIR is built beside itself and renamed into place, so a crash leaves no half folder.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from generation.rows import chunk_id, pool_ids, upgrade
from loop.export import building, check_out
from loop.models import PACKAGED, hub_id
from loop.runfolder import (
    CONFIG,
    METRICS,
    read_config,
    read_jsonl,
    round_dir,
    round_numbers,
)
from training.sft import student_row

SPLITS = ("train", "validation", "test", "rejected")
JSON_COLUMNS = ("requests", "provenance", "filters")  # their shape varies between methods: JSON text in one string column
COLUMNS = {  # name: what it holds (the card's column list)
    "id": "the row's id in the run (`daig trace RUN_DIR ID` prints its lineage)",
    "messages": "[{role: user, content: prompt}, {role: assistant, content: answer}]: the row exactly as the student trained on it",
    "round": "the loop round that made it (0: an eval set DAIG built; empty: your own eval file)",
    "method": "the generation method", "task": "the task label", "teacher_model": "the teacher that wrote it",
    "instruction": "the instruction", "input": "its input (may be empty)", "output": "the teacher's answer",
    "context": "the domain passage the row is about", "chunk_id": "that passage's id, `<document>#<n>`",
    "source": "the document it came from", "heading": "the passage's heading path",
    "pool_ids": "the seed/pool tasks shown to the teacher, or the task it evolved",
    "loop_split": "train: the loop trained on it; eval: held out for the loop's own evaluation (train split only)",
    "stage": "where it was rejected (rejected split)", "reason": "why it was rejected (rejected split)",
    "raw": "the teacher's text it was rejected on (rejected split)",
    "requests": "JSON: {stage: cache key of the teacher request}", "provenance": "JSON: everything the method recorded about its making",
    "filters": "JSON: every filter decision, in order, with its scores",
}


def features():
    from datasets import Features, List, Value

    text = Value("string")
    types = {"messages": List({"role": text, "content": text}), "round": Value("int32"), "pool_ids": List(text)}
    return Features({name: types.get(name, text) for name in COLUMNS})


def read_run(run_dir: Path) -> tuple[dict, dict[str, list[dict]]]:
    """The run's saved config and its rows by split; a folder that is not a run is one line."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder; pass the folder `daig run --out` made")
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG}: not a daig run folder; pass the folder `daig run --out` made")
    try:
        config = read_config(run_dir)
    except yaml.YAMLError as e:
        raise ValueError(f"{run_dir / CONFIG} is not valid YAML ({type(e).__name__}); restore it from the run's log or W&B") from None
    rounds = [r for r in round_numbers(run_dir) if (round_dir(run_dir, r) / "data.jsonl").exists()]
    if not rounds:
        raise FileNotFoundError(f"{run_dir} has no rounds/<r>/data.jsonl: no round has finished generating yet")
    rows = {"train": [x for r in rounds for x in read_jsonl(round_dir(run_dir, r) / "data.jsonl")],
            "rejected": [x for r in rounds for x in read_jsonl(round_dir(run_dir, r) / "rejected.jsonl")]}
    for name in ("validation", "test"):
        if (run_dir / "eval" / f"{name}.jsonl").exists():
            rows[name] = read_jsonl(run_dir / "eval" / f"{name}.jsonl")
    return config, {k: [upgrade(x) for x in v if isinstance(x, dict)] for k, v in rows.items()}


def messages(row: dict, include_context: bool) -> list[dict]:
    """The chat the student trains on for a row; [] for a rejected row that never got an instruction and an answer."""
    if not (row.get("instruction") and row.get("output")):
        return []
    student = student_row({**row, "id": row.get("id"), "task": row.get("task")}, include_context)
    return student["prompt"] + student["completion"]


def record(row: dict, split: str, include_context: bool) -> dict:
    """One row of the dataset: the messages, the text fields and the provenance, in the one schema of every split."""
    prov = row.get("provenance") or {}
    chunk = chunk_id(row) or row.get("chunk_id")
    text = {k: _text(row.get(k)) for k in ("id", "method", "task", "teacher_model", "instruction", "input", "output", "context",
                                          "stage", "reason", "raw")}
    return {**text, "messages": messages(row, include_context), "round": None if row.get("round") is None else int(row["round"]),
            "chunk_id": chunk, "source": chunk.rsplit("#", 1)[0] if chunk else None, "heading": _text(prov.get("heading")),
            "pool_ids": [str(x) for x in pool_ids(row)], "loop_split": _text(row.get("split")) if split == "train" else None,
            **{k: json.dumps(row.get(k) or ({} if k != "filters" else []), ensure_ascii=False, default=str) for k in JSON_COLUMNS}}


def _text(value) -> str | None:
    return None if value is None else str(value)


def build_dataset(config: dict, rows: dict[str, list[dict]]):
    """The DatasetDict: train and rejected always (empty or not), validation and test where the run has them."""
    from datasets import Dataset, DatasetDict

    include_context = bool((config.get("training") or {}).get("include_context", False))
    feats = features()
    splits = {}
    for name in SPLITS:
        if name in rows:
            records = [record(r, name, include_context) for r in rows[name]]
            splits[name] = Dataset.from_dict({c: [x[c] for x in records] for c in feats}, features=feats, split=name)
    return DatasetDict(splits)


def export_data(run_dir: str | Path, out: str | Path, repo_id: str | None = None, license: str = "unknown") -> Path:
    """Write the run's dataset to `out` (see the module docstring); repo_id names the Hub repo it is for in the card."""
    run_dir, out = Path(run_dir), Path(out)
    check_out(out)
    config, rows = read_run(run_dir)
    dataset = build_dataset(config, rows)
    card = dataset_card(dataset, config, _last_metrics(run_dir), run_dir.name, repo_id, license)
    with building(out) as tmp:
        dataset.save_to_disk(str(tmp))
        (tmp / "data").mkdir()
        for name, split in dataset.items():
            split.to_parquet(str(tmp / "data" / f"{name}-00000-of-00001.parquet"))
        card.save(tmp / "README.md")
        (tmp / CONFIG).write_bytes((run_dir / CONFIG).read_bytes())  # as saved; not copy(), which keeps its 0600 mode
    return out


def upload_paths(folder: str | Path) -> list[str]:
    """What a push uploads: the card, the config and the Parquet files (the save_to_disk copy stays local)."""
    folder = Path(folder)
    return ["README.md", CONFIG] + sorted(p.relative_to(folder).as_posix() for p in (folder / "data").glob("*.parquet"))


def _last_metrics(run_dir: Path) -> dict:
    lines = read_jsonl(run_dir / METRICS)
    return lines[-1] if lines else {}


def dataset_card(dataset, config: dict, metrics: dict, run_name: str, repo_id: str | None, license: str):
    """The dataset card (huggingface_hub's DatasetCard): metadata for the Hub, then how the data was made and counted."""
    from huggingface_hub import DatasetCard, DatasetCardData

    gen = config.get("generation") or {}
    method = gen.get("method", "daig")
    row_methods = sorted({m for split in dataset.values() for m in split["method"] if m})
    total = sum(len(split) for split in dataset.values())
    data = DatasetCardData(
        license=license, task_categories=["text-generation"], size_categories=[_size_category(total)],
        pretty_name=f"daig-loop {method} data ({run_name})",
        tags=sorted({"synthetic", "daig-loop", "instruction-tuning", method, *row_methods}),
        configs=[{"config_name": "default", "data_files": [{"split": name, "path": f"data/{name}-*.parquet"} for name in dataset]}])
    body = "\n\n".join([f"# {data.pretty_name}", _made(config, metrics, method), _counts(dataset), _rejections(dataset["rejected"]),
                        _columns(), _method_config(gen, method), _licence(config, license), _use(repo_id)])
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def _model(spec: str | None) -> str:
    """A model as the card names it: the run's spec and its Hub id, or for a local folder or file only its name."""
    if not spec:
        return "`?`"
    hub = hub_id(spec)
    if hub is None and spec not in PACKAGED:
        return f"a local model (`{Path(spec).name}`)"
    return f"`{spec}`" + (f" ([{hub}](https://huggingface.co/{hub}))" if hub and hub != spec else "")


def _made(config: dict, metrics: dict, method: str) -> str:
    gen, training = config.get("generation") or {}, config.get("training") or {}
    teacher = gen.get("teacher") or {}
    open_book = training.get("include_context", False)
    lines = [
        "## How it was made",
        "",
        f"Synthetic instruction data from a daig-loop run: a teacher model wrote instructions and answers "
        f"about a domain corpus with the `{method}` method, filters kept or rejected each row (the rejected split keeps "
        "every rejected row with its reason), and a student model was LoRA-trained on the kept rows, round after round.",
        "",
        f"- Method: `{method}` (its config below; the whole resolved run config is `{CONFIG}` in this repo)",
        f"- Teacher: {_model(teacher.get('model'))}, served by `{teacher.get('backend', '?')}`",
        f"- Student: {_model(config.get('student'))}, trained {'open book: its prompt holds the domain passage' if open_book else 'closed book: its prompt holds the instruction and input, not the passage'}",
        f"- Rounds: {config.get('rounds', '?')}, seed {config.get('seed', '?')}",
    ]
    if metrics.get("eval_sets_from"):
        lines.append(f"- Validation and test sets: {metrics['eval_sets_from']}")
    if metrics.get("run_teacher_requests") is not None:
        cost = f", ${metrics['run_cost_usd']:g}" if metrics.get("run_cost_usd") else ""
        lines.append(f"- Teacher requests: {metrics['run_teacher_requests']} ({metrics.get('run_teacher_calls', 0)} paid calls, "
                     f"{metrics.get('run_cache_hits', 0)} answered by the cache, {metrics.get('run_teacher_tokens', 0)} tokens{cost})")
    lines.append("- Exported with `daig export-data RUN_DIR --out DIR`")
    return "\n".join(lines)


def _counts(dataset) -> str:
    names = list(dataset)
    per = {name: Counter(t or "(none)" for t in dataset[name]["task"]) for name in names}
    tasks = sorted(set().union(*per.values()))
    table = "\n".join(f"| {t} | " + " | ".join(str(per[n][t]) for n in names) + " |" for t in tasks)
    totals = " | ".join(str(len(dataset[n])) for n in names)
    return ("## Splits and rows per task\n\n"
            "train: every kept row of every round; validation and test: the run's fixed eval sets (never trained on); "
            "rejected: every row a filter or the teacher failed.\n\n"
            f"| task | {' | '.join(names)} |\n|---|{'---|' * len(names)}\n{table}\n| **all** | {totals} |")


def _rejections(rejected) -> str:
    counts = Counter(zip(rejected["stage"], rejected["reason"]))
    if not counts:
        return "## Rejections\n\nNone."
    rows = "\n".join(f"| {stage or '?'} | {reason or '?'} | {n} |" for (stage, reason), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))
    return f"## Rejections by reason\n\n| stage | reason | rows |\n|---|---|---|\n{rows}"


def _columns() -> str:
    return "## Columns\n\n" + "\n".join(f"- `{name}`: {what}" for name, what in COLUMNS.items())


def _method_config(gen: dict, method: str) -> str:
    key = "evol" if method == "evol_instruct" else method  # the config section of each method
    section = {k: gen[k] for k in (key, "novelty", "grounding") if k in gen}
    return f"## Method config\n\n```yaml\n{yaml.safe_dump({'generation': section} if section else {}, sort_keys=False).strip()}\n```"


def _licence(config: dict, license: str) -> str:
    teacher = ((config.get("generation") or {}).get("teacher") or {}).get("model")
    terms = f" (`{teacher}`: {PACKAGED[teacher].licence})" if teacher in PACKAGED else f" (`{teacher}`)" if teacher else ""
    return (f"## Licence\n\n`{license}`" + (" (set it with `daig export-data --license`)" if license == "unknown" else "") +
            f". The rows quote the domain documents (`context`, `input`) and the teacher's words{terms}; their terms apply too.")


def _use(repo_id: str | None) -> str:
    load = (f'from datasets import load_dataset\n\ndata = load_dataset("{repo_id}")' if repo_id else
            'from datasets import load_from_disk\n\ndata = load_from_disk("DIR")  # the --out folder')
    return ("## Use\n\n```python\n" + load + "\n```\n\n`messages` is the chat format trl's SFTTrainer trains on: "
            "`SFTTrainer(model=..., train_dataset=data[\"train\"])`.")


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"
