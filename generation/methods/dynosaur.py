"""Dynosaur-style tasks from dataset metadata (Yin et al. 2023, WadeYin9712/Dynosaur).

The teacher reads a dataset's description and two of its rows and proposes up to three tasks, each an
instruction with input fields and one output field, as a Python dict. Proposals are validated as the
reference's filter_invalid_tasks.py does (no output field, a field the dataset lacks, the output among the
inputs, an instruction repeated in the reply) plus duplicates of tasks seen in earlier replies or rounds;
then, as organize_data.py does, a classification-like output gets its label space appended to the
instruction (or the task is dropped when its labels are too imbalanced), and instances are built from the
dataset's own rows: the input fields formatted like the reference, the output field's value as the answer.
No teacher answer is needed. Every proposal that fails is a rejected row with its reason.

Field names are compared exactly, as filter_invalid_tasks.py does (`j in all_fields`: no case folding, no
stripping); ours checks against every field of the dataset, the reference against the keys of its first row.

Deviation from the reference (cfg.dynosaur.salvage_tasks, on by default; False discards as the reference does):
a reply that does not parse as a whole, typically cut off at max_tokens or looping past its last task, is
not discarded: each complete dict in it (braces balanced outside string literals) is read in order, exact
repeats dropped, a wrapper {'task1': {...}, ...} opened into its tasks, and every task is vetted by the same
rules. Such proposals carry a dynosaur_salvage filter decision.
"""
from __future__ import annotations

import ast
import itertools
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from generation.config import DynosaurConfig, GenerationConfig
from generation.data.corpus import DataError, open_dataset, read_jsonl
from generation.methods.templates import render
from generation.rows import RoundStats, new_row, rejected_row, request_seed, teacher_failure
from generation.teacher.backends import Teacher, TeacherRequest

# The prompt (system message and task proposal), as code/instruction_generation/generate_tasks_with_description.py
# sends it, is generation/methods/templates/dynosaur/*.jinja (generation.dynosaur.templates names your own).
FIELD_CHARS = 1000  # truncate_metadata(..., 1000) and truncate(row, 1000)
INSTANCE_CHARS = 2000  # organize_data.py keeps input[:2000] and output[:2000]
LABEL_ROWS = 100  # organize_data.py decides the label space on selected_data[:100]


@dataclass
class DatasetMeta:
    name: str
    description: str
    fields: list[str]
    rows: list[dict]


def truncate(example: dict, max_len: int) -> dict:
    """generate_tasks_with_description.py `truncate`: drop fields whose name contains 'id', nested values and None;
    cut scalars to max_len chars, lists of strings and flat dicts to max_len chars of JSON."""
    truncated = {}
    for k, v in example.items():
        if "id" in k:
            continue
        if isinstance(v, (str, int, float, bool)):
            truncated[k] = str(v).strip()[:max_len]
        elif isinstance(v, list):
            cur, flat = [], True
            for item in v:
                if not isinstance(item, str):
                    flat = False
                    break
                if len(json.dumps(cur + [item])) > max_len:
                    break
                cur.append(item)
            if flat:
                truncated[k] = cur
        elif isinstance(v, dict):
            cur, flat = {}, True
            for item, value in v.items():
                if not isinstance(value, (str, int, float, bool)):
                    flat = False
                    break
                if len(json.dumps({**cur, item: value})) > max_len:
                    break
                cur[item] = value
            if flat:
                truncated[k] = cur
    return truncated


def metadata_input(name: str, description: str, rows: list[dict]) -> dict:
    """truncate_metadata(metadata, 1000) for the keys it keeps: task_name, selected_data (two rows), summary."""
    return {"task_name": name[:FIELD_CHARS], "selected_data": [truncate(r, FIELD_CHARS) for r in rows[:2]],
            "summary": description[:FIELD_CHARS]}


def task_prompt(meta: DatasetMeta, rows: list[dict], templates: dict | None = None) -> str:
    """The task-proposal prompt: the reference's, with the dataset's metadata (str() of the dict, as it sends it)."""
    cur = metadata_input(meta.name, meta.description, rows)
    return render("dynosaur", "tasks", templates, metadata=str(cur), fields=str(list(cur["selected_data"][0].keys())))


def task_messages(meta: DatasetMeta, rows: list[dict], templates: dict | None = None, json_replies: bool = False) -> tuple[tuple[str, str], ...]:
    system = render("dynosaur", "system", templates)
    if json_replies:  # ours: OpenAI's JSON mode needs the word JSON in the request
        system += "\n\n" + render("dynosaur", "json_note", templates)
    return (("system", system), ("user", task_prompt(meta, rows, templates)))


def load_dataset_meta(cfg: DynosaurConfig, hub: dict | None = None) -> DatasetMeta:
    """The dataset's name, description, fields and rows: a .jsonl file (description from cfg.description) or a
    `datasets` save_to_disk folder / Hub name (cfg.description, else its DatasetInfo.description; hub: load_dataset
    options, from generation.datasets)."""
    path = Path(cfg.dataset).expanduser()
    if path.suffix == ".jsonl" or path.is_file():
        if not path.is_file():
            raise DataError(f"generation.dynosaur.dataset: {path} not found; give a .jsonl file or a `datasets` folder or name")
        if path.suffix != ".jsonl":
            raise DataError(f"generation.dynosaur.dataset: {path} is a {path.suffix or 'plain'} file; use .jsonl or a `datasets` save_to_disk folder")
        rows = [row for _, row in read_jsonl(path)]
        fields = list(dict.fromkeys(k for r in rows for k in r))
        description, name = cfg.description, path.stem
    else:
        ds = open_dataset(cfg.dataset, cfg.split, hub, "generation.dynosaur.split")
        rows, fields = ds.to_list(), list(ds.column_names)
        description, name = cfg.description or ds.info.description or "", path.name if path.is_dir() else cfg.dataset
    if not description.strip():
        raise DataError(f"generation.dynosaur.description: {cfg.dataset} has no description, and Dynosaur shows the teacher one; "
                        "set generation.dynosaur.description to a few sentences on what the rows are")
    if not rows:
        raise DataError(f"generation.dynosaur.dataset: {cfg.dataset} has no rows")
    if len([f for f in fields if "id" not in f]) < 2:
        raise DataError(f"generation.dynosaur.dataset: {cfg.dataset} has fields {fields}; Dynosaur needs at least two whose name does "
                        "not contain 'id' (the reference hides those), one to map from and one to map to")
    return DatasetMeta(name=name, description=description.strip(), fields=fields, rows=rows)


def parse_tasks(text: str, json_first: bool = False) -> list | None:
    """The reply as a list of proposed tasks (ast.literal_eval, as the reference); None when it is not a dict.
    Falls back to the text between the first '{' and the last '}', for chat replies that add a line or a fence.
    json_first (json_replies): json.loads is tried first, which also reads JSON's true, false and null."""
    readers = (json.loads, ast.literal_eval) if json_first else (ast.literal_eval,)
    for candidate in (text.strip(), text[text.find("{"):text.rfind("}") + 1]):
        for read in readers:
            try:
                value = read(candidate)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # JSONDecodeError is a ValueError
                continue
            if isinstance(value, dict):
                return list(value.values())
    return None


def complete_dicts(text: str) -> list[str]:
    """Each complete {...} of the text that is not inside another complete one, in order. Quotes count only
    inside braces, so an apostrophe in prose before the dicts does not open a string."""
    spans: list[tuple[int, int]] = []
    starts: list[int] = []
    quote, escaped = "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "'\"" and starts:
            quote = ch
        elif ch == "{":
            starts.append(i)
        elif ch == "}" and starts:
            start = starts.pop()
            while spans and spans[-1][0] > start:  # nested in this one
                spans.pop()
            spans.append((start, i + 1))
    return [text[a:b] for a, b in spans]


def salvage_tasks(text: str) -> tuple[list, int]:
    """Ours (cfg.dynosaur.salvage_tasks): the task dicts of a reply parse_tasks gives up on, in order and without
    exact repeats, and how many repeats were dropped. A dict of dicts is a wrapper ({'task1': {...}}) and
    yields its values; any other non-empty dict is one task, left for vet_task to judge."""
    found = []
    for span in complete_dicts(text):
        try:
            value = ast.literal_eval(span)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict) and value:
            found.extend(value.values() if all(isinstance(v, dict) for v in value.values()) else [value])
    unique = []
    for task in found:
        if task not in unique:
            unique.append(task)
    return unique, len(found) - len(unique)


def task_fields(task) -> tuple[str, list[str], list[str]] | None:
    """(instruction, input fields, output fields) of one proposal, or None when it is not of that shape.
    A single field given as a string is taken as a one-item list."""
    if not isinstance(task, dict) or not isinstance(task.get("instruction"), str) or not task["instruction"].strip():
        return None
    lists = []
    for key in ("input_fields", "output_field"):
        value = task.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not all(isinstance(f, str) for f in value):
            return None
        lists.append(list(value))
    return task["instruction"].strip(), lists[0], lists[1]


def field_problem(inputs: list[str], outputs: list[str], fields: list[str]) -> str:
    """filter_invalid_tasks.py's checks, in its order: no output field, an unknown field, the output among the inputs."""
    if not outputs:
        return "empty_output_field"
    if any(f not in fields for f in inputs + outputs):  # exact, as the reference's `j in all_fields`
        return "unknown_field"
    if set(inputs) & set(outputs):
        return "output_in_inputs"
    return ""


def is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def label_space(rows: list[dict], output: str) -> tuple[str, str]:
    """organize_data.py on the first 100 rows: ('', ' Answers must be one of a, b.') for a balanced label set of short
    labels, ('', '') for open outputs, (reason, '') when the task is dropped. Empty values are left out (ours)."""
    values = [r.get(output) for r in rows[:LABEL_ROWS]]
    if any(isinstance(v, (list, dict)) for v in values):
        return "non_scalar_output", ""
    labels = [str(v).strip() for v in values if not is_empty(v)]
    counts = Counter(labels)
    if not counts or len(counts) > 10:
        return "", ""
    top = max(counts.values())
    if not ((len(counts) == 2 and top <= 70) or (len(counts) > 2 and top <= 50)):  # "not too imbalanced"
        return "imbalanced_labels", ""
    if any(len(label) > 15 for label in counts):
        return "", ""
    return "", f" Answers must be one of {', '.join(sorted(counts))}."  # the reference's order is set order; ours is sorted


def format_input(row: dict, inputs: list[str]) -> str:
    """organize_data.py `concat_fields` for inputs: one field as its value; several as "field is 'value'. ";
    a list of strings quoted and joined ("A. 'x', B. 'y'." for a field named like choice). '' when unusable."""
    text = ""
    for f in inputs:
        value = row.get(f)
        if isinstance(value, (str, int, float, bool)):
            if len(inputs) > 1:
                text += f"{f} is '" + str(value).strip() + "'. "
            else:
                text = str(value).strip()
        elif isinstance(value, list) and value and isinstance(value[0], str) and None not in value:
            if "choice" in f:
                for i, choice in enumerate(value):
                    text += " " + chr(i + ord("A")) + ". '" + str(choice) + "',"
                text = text[:-1] + "."
            else:
                text += "'" + "', '".join(str(v) for v in value) + "'. "
        else:
            return ""
    return text


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].strip("_") or "task"


def task_key(instruction: str, inputs: list[str], outputs: list[str]) -> tuple:
    return (" ".join(instruction.lower().split()), tuple(inputs), tuple(outputs))


def usable_rows(rows: list[dict], inputs: list[str], output: str) -> list[int]:
    """Rows with a non-empty scalar output and inputs that format (organize_data.py skips the others)."""
    return [j for j, r in enumerate(rows)
            if not is_empty(r.get(output)) and not isinstance(r.get(output), (list, dict)) and format_input(r, inputs)]


@dataclass
class Proposal:
    instruction: str
    inputs: list[str]
    outputs: list[str]
    filters: list[dict] = field(default_factory=list)
    reason: str = ""  # the first failed check, '' when the task is valid
    label_space: str = ""
    usable: list[int] = field(default_factory=list)


def vet_task(task, meta: DatasetMeta, seen: set, earlier: list[str]) -> Proposal:
    """The checks in order, each recorded; the first that fails ends it. `seen` gains the task once its fields pass."""
    parsed = task_fields(task)
    p = Proposal(*(parsed or ("", [], [])))

    def passed(name: str, reason: str, **extra) -> bool:
        p.filters.append({"filter": name, "kept": not reason, "reason": reason, **extra})
        p.reason = reason
        return not reason

    problem = "malformed_task" if parsed is None else field_problem(p.inputs, p.outputs, meta.fields)
    unknown = [f for f in p.inputs + p.outputs if f not in meta.fields] if problem == "unknown_field" else []
    if not passed("dynosaur_fields", problem, **({"unknown": unknown} if unknown else {})):  # the trace shows which
        return p
    key = task_key(p.instruction, p.inputs, p.outputs)
    duplicate = "duplicate_in_reply" if p.instruction in earlier else ("duplicate_seen" if key in seen else "")
    seen.add(key)
    if not passed("dynosaur_duplicate", duplicate):
        return p
    reason, p.label_space = label_space(meta.rows, p.outputs[0])
    if not passed("dynosaur_labels", reason, label_space=p.label_space.strip()):
        return p
    p.usable = usable_rows(meta.rows, p.inputs, p.outputs[0])
    no_output = all(is_empty(r.get(p.outputs[0])) for r in meta.rows)
    passed("dynosaur_rows", "" if p.usable else ("empty_output" if no_output else "unusable_rows"), score=len(p.usable))
    return p


def run_dynosaur_round(teacher: Teacher, meta: DatasetMeta, seen: set, cfg: GenerationConfig, round_idx: int, seed: int,
                       rng: random.Random) -> tuple[list[dict], list[dict], RoundStats]:
    """Propose tasks from the metadata, vet them, build instances from rows. Returns kept rows (instances), rejected
    rows (one per failed proposal, or per reply that holds none) and stats (requests = tasks proposed)."""
    d = cfg.dynosaur
    base = request_seed(seed, round_idx)
    shown = [sorted(rng.sample(range(len(meta.rows)), min(2, len(meta.rows)))) for _ in range(d.tasks_per_round)]
    # Temperature 0 in the reference, and top_p left at its default of 1.
    requests = [TeacherRequest(task_messages(meta, [meta.rows[j] for j in idx], d.templates, d.json_replies), d.max_tokens, d.temperature,
                               1.0, base + n, json_object=d.json_replies)
                for n, idx in enumerate(shown)]
    replies = teacher.generate(requests, desc=f"round {round_idx} dynosaur tasks")

    stats, kept, rejected = RoundStats(), [], []
    next_id = itertools.count()
    for n, (idx, req, reply) in enumerate(zip(shown, requests, replies)):
        head = new_row("", round_idx, "dynosaur", "", teacher.model, {"tasks": teacher.key(req)},
                       {"dataset": meta.name, "prompt_index": n, "shown_rows": idx})
        tasks = None if reply.error else parse_tasks(reply.text, d.json_replies)
        salvage = None
        if tasks is None and not reply.error and d.salvage_tasks:  # ours: the reference discards the whole reply
            found, repeats = salvage_tasks(reply.text)
            if found:
                tasks = found
                salvage = {"filter": "dynosaur_salvage", "kept": True, "reason": "", "finish_reason": reply.finish_reason,
                           "tasks": len(found), "repeats_dropped": repeats}
        if not tasks:  # counted as one proposal, so the keep rate stays honest
            reason = teacher_failure(reply) or ("unparseable_tasks" if tasks is None else "no_tasks")
            stats.requests += 1
            rejected.append(rejected_row({**head, "id": f"r{round_idx}-{next(next_id):05d}"}, "tasks", reason, reply.text,
                                         filters=[{"filter": "dynosaur_parse", "kept": False, "reason": reason}]))
            continue
        stats.requests += len(tasks)
        earlier: list[str] = []
        for t, task in enumerate(tasks):
            p = vet_task(task, meta, seen, earlier)
            earlier.append(p.instruction)
            if salvage:
                p.filters.insert(0, dict(salvage))
            row = {**head, "task": slug(f"{meta.name} {p.outputs[0]}") if p.outputs else "", "instruction": p.instruction + p.label_space,
                   "provenance": {**head["provenance"], "task_index": t, "input_fields": p.inputs, "output_field": p.outputs}, "filters": p.filters}
            if p.reason:
                rejected.append(rejected_row({**row, "id": f"r{round_idx}-{next(next_id):05d}"}, "task", p.reason, reply.text))
                continue
            for j in rng.sample(p.usable, min(d.rows_per_task, len(p.usable))):
                r = meta.rows[j]
                kept.append({**row, "id": f"r{round_idx}-{next(next_id):05d}", "input": format_input(r, p.inputs)[:INSTANCE_CHARS],
                             "output": str(r[p.outputs[0]]).strip()[:INSTANCE_CHARS], "context": "", "filters": list(p.filters),
                             "provenance": {**row["provenance"], "row_index": j, "proposed_instruction": p.instruction}})
    for r in rejected:
        stats.reject(r["reason"])
    return kept, rejected, stats


# ---- the method contract (loop/methods.py) -------------------------------------------------------------------------

Config = DynosaurConfig  # its section of the run config: generation.dynosaur
STEERED = False  # a faithful baseline: the tasks come from the dataset's metadata; their weights are only logged
STREAMS = False  # run_round returns its rows whole, at the end of its round


@dataclass
class State:
    """What Dynosaur carries from round to round: the dataset, and the tasks proposed so far (never proposed twice)."""
    meta: DatasetMeta
    seen: set = field(default_factory=set)

    def to_json(self) -> dict:
        return {"seen": sorted(self.seen)}

    def restore(self, saved: dict) -> None:
        """Lay a checkpoint's to_json() over this freshly started state."""
        self.seen = {(a, tuple(b), tuple(c)) for a, b, c in saved["seen"]}


def start(g: GenerationConfig, pool: dict, chunks: list, load_embedder: Callable) -> State:
    """The dataset and its metadata (generation.dynosaur.dataset); a bad file fails here, before any model loads."""
    return State(load_dataset_meta(g.dynosaur, g.datasets.get(g.dynosaur.dataset)))


def run_round(teacher: Teacher, state: State, g: GenerationConfig, weights: dict[str, float], round_idx: int, seed: int,
              rng: random.Random, closed_book: bool = True) -> tuple[list[dict], list[dict], RoundStats]:
    return run_dynosaur_round(teacher, state.meta, state.seen, g, round_idx, seed, rng)
