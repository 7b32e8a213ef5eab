"""Prompt uncertainty per task (Active Instruction Tuning, Kung et al. 2023, arXiv:2311.00288).

The paper's measure, as its code computes it (PlusLabNLP/Active-IT, setting `PI-NL-I10-TDTE-High-0.2-Mean-abs-bald`:
ActiveIT/src/ni_dataset.py random_drop_word, ActiveIT/src/ni_trainer.py prediction_step,
ActiveIT/my_scripts/TLAL/TLAL_utils.py get_task_PI_StdOrMean_OriginalDef):
  for each of a task's instances (I10: 10 of them) take a target answer y; score it under the original instruction
  and under K perturbed instructions, each word of the instruction dropped with probability 0.2; the likelihood of
  y is exp(-mean token NLL of y); prompt uncertainty = mean over instances and perturbations of
  |p(y | perturbed instruction) - p(y | original instruction)|.
What we do differently, and why:
- target="reference" (default) scores the row's reference answer (the teacher's) instead of the student's own greedy
  answer, so no generation runs on CPU each round. This is the paper code's "HL" (has label) variant; its reported
  setting is "NL", our target="prediction", which first generates the student's greedy answer (max_new_tokens).
- Every row carries its own instruction (the paper's tasks share one definition), so each row gets its own K
  perturbations; the paper fixes K perturbed definitions per task. Its TDTE setting also perturbs the in-context
  examples' inputs; our prompts have none, so only the instruction is perturbed, never the input or the context.
- Words are dropped with the whitespace around them kept, so p_drop=0 reproduces the prompt exactly (the
  reference's split/join would also normalise whitespace).
- When max_length truncates an answer, every variant of the row is scored on the same first m answer tokens.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from eval.evaluate import encode, sample_answers, sequence_nlls


def drop_words(text: str, p_drop: float, rng: random.Random) -> str:
    """Drop each whitespace-separated word (with the whitespace after it) with probability p_drop."""
    lead = text[:len(text) - len(text.lstrip())]
    return lead + "".join(w for w in re.findall(r"\S+\s*", text) if rng.random() >= p_drop)


def perturbed_prompt(row: dict, p_drop: float, rng: random.Random) -> list[dict]:
    """The row's prompt with its instruction word-dropped. The instruction is row['instruction'] when the last user
    message contains it (the input and any context stay intact); otherwise the whole last message is perturbed."""
    *head, last = row["prompt"]
    content, instruction = last["content"], row.get("instruction", "")
    if instruction and instruction in content:
        content = content.replace(instruction, drop_words(instruction, p_drop, rng), 1)
    else:
        content = drop_words(content, p_drop, rng)
    return [*head, {**last, "content": content}]


def pick_rows(rows_by_task: dict[str, list[dict]], rows_per_task: int, seed: int) -> list[dict]:
    """Up to rows_per_task rows of each task (0: all), a seeded sample, tasks in sorted order."""
    picked = []
    for task in sorted(rows_by_task):
        rows = rows_by_task[task]
        if rows_per_task and len(rows) > rows_per_task:
            rows = random.Random(f"{seed}:{task}").sample(rows, rows_per_task)
        picked += [{**r, "task": task} for r in rows]
    return picked


@dataclass(frozen=True)
class Uncertainty:
    """What to measure prompt uncertainty on, and how (the arguments of prompt_uncertainty but the model)."""
    rows_by_task: dict[str, list[dict]]
    n_perturb: int
    p_drop: float
    max_length: int
    seed: int
    batch_size: int
    rows_per_task: int = 0
    target: str = "reference"
    max_new_tokens: int = 64

    def measure(self, model, tokenizer) -> dict[str, float]:
        return prompt_uncertainty(model, tokenizer, self.rows_by_task, self.n_perturb, self.p_drop, self.max_length, self.seed,
                                  self.batch_size, self.rows_per_task, self.target, self.max_new_tokens)


def prompt_uncertainty(model, tokenizer, rows_by_task: dict[str, list[dict]], n_perturb: int, p_drop: float,
                       max_length: int, seed: int, batch_size: int, rows_per_task: int = 0, target: str = "reference",
                       max_new_tokens: int = 64) -> dict[str, float]:
    """{task: mean |p(answer | perturbed instruction) - p(answer | instruction)|}, NaN for a task none of whose rows
    has an answer token left within max_length.

    rows_by_task: eval-style rows ('prompt' and 'completion' chat messages) grouped by task; a row may carry
    'instruction', the part of its last user message to perturb (see perturbed_prompt). Perturbations are seeded per
    row (seed, task, row id), so the result does not depend on batch_size or on the other rows.
    target: 'reference' scores each row's completion; 'prediction' scores the student's greedy answer to the
    original prompt instead (the paper's setting; costs a generation of max_new_tokens per row).
    """
    if target not in ("reference", "prediction"):
        raise ValueError(f"target: use 'reference' or 'prediction', got {target!r}")
    if n_perturb < 1 or not 0 <= p_drop <= 1:
        raise ValueError(f"n_perturb must be >= 1 and p_drop in [0, 1], got {n_perturb} and {p_drop}")
    rows = pick_rows(rows_by_task, rows_per_task, seed)
    if target == "prediction" and rows:
        answers = sample_answers(model, tokenizer, rows, max_new_tokens, batch_size)
        rows = [{**r, "completion": [{"role": "assistant", "content": a["student"]}]} for r, a in zip(rows, answers)]
    seqs = []  # per row, n_perturb + 1 in a row: the original prompt, then the perturbed ones
    for n, row in enumerate(rows):
        rng = random.Random(f"{seed}:{row['task']}:{row.get('id', n)}")
        prompts = [row["prompt"]] + [perturbed_prompt(row, p_drop, rng) for _ in range(n_perturb)]
        seqs += [encode(tokenizer, p, row["completion"], max_length) for p in prompts]
    nlls = sequence_nlls(model, tokenizer, seqs, batch_size)
    per_task: dict[str, list[float]] = {task: [] for task in sorted(rows_by_task)}
    k = n_perturb + 1
    for n, row in enumerate(rows):
        variants = nlls[n * k:(n + 1) * k]
        m = min(len(v) for v in variants)
        if m == 0:  # the prompt fills max_length: no answer token to score
            continue
        probs = [math.exp(-sum(v[:m]) / m) for v in variants]
        per_task[row["task"]] += [abs(p - probs[0]) for p in probs[1:]]
    return {task: sum(d) / len(d) if d else math.nan for task, d in per_task.items()}
