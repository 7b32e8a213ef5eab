"""DAIG: Domain-Adaptive Instruction Generation.

One request per new example: pick a task by the current weights, show the teacher k pool examples of
that task and one domain chunk, and ask for a new instruction grounded in the chunk; then ask for the
answer given instruction + chunk. Unparseable or filtered replies become rejected rows with their raw
text and reason. Every kept row records its provenance.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from generation.config import GenerationConfig
from generation.corpus import Chunk
from generation.diversity import filter_batch
from generation.filters import NoveltyFilter, answer_problem, instruction_problem
from generation.pool import PoolItem, sample_examples, sample_task
from generation.teachers import Teacher, TeacherRequest

INSTRUCTION_PROMPT = """Examples of {task} tasks (other topics; for the style only, do not reuse them):
{examples}

Passage:
\"\"\"
{chunk}
\"\"\"

{directive}"""

# The directive is also what the echo filter compares against: small teachers often restate it.
DIRECTIVE = ("Write one new {task} task that a user could ask about the facts in this passage. Make it specific and "
             "self-contained, so it makes sense without seeing the passage. Reply with the task only.")

ANSWER_PROMPT = """Passage:
\"\"\"
{chunk}
\"\"\"

{instruction}

Answer using only the passage. Be concise."""

# "Task:", "**New task:**", "Classification task 2:" ... (a short label, then a colon or similar).
_PREFIX = re.compile(r"^\s*(?:#+\s*)?(?:\*\*)?(?:[\w-]+\s+){0,2}?(?:task|instruction|question)\s*(?:\d+)?\s*[:.)-]\s*(?:\*\*)?\s*", re.I)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+")
_NEXT_ITEM = re.compile(r"\s+2[.)]\s")  # "1. task 2. another task": keep the first


@dataclass
class RoundStats:
    """Candidates and rejections; what the teacher cost is the teacher ledger's business."""
    requests: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def task_label(task: str) -> str:
    return task.replace("_", " ")


def format_example(item: PoolItem) -> str:
    return f"{item.instruction}\n   Input: {item.input}" if item.input else item.instruction


def instruction_messages(task: str, examples: list[PoolItem], chunk: Chunk) -> tuple[tuple[str, str], ...]:
    shown = "\n".join(f"{n}. {format_example(e)}" for n, e in enumerate(examples, 1))
    directive = DIRECTIVE.format(task=task_label(task))
    return (("user", INSTRUCTION_PROMPT.format(chunk=chunk.text, task=task_label(task), examples=shown, directive=directive)),)


def answer_messages(instruction: str, chunk: Chunk) -> tuple[tuple[str, str], ...]:
    return (("user", ANSWER_PROMPT.format(chunk=chunk.text, instruction=instruction)),)


def parse_instruction(text: str) -> str:
    """The first non-empty paragraph, without 'Task:' labels, list numbering or wrapping quotes."""
    para = next((p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()), "")
    para = _NUMBERING.sub("", _PREFIX.sub("", para.strip()))
    para = _NEXT_ITEM.split(" ".join(para.split()), maxsplit=1)[0]
    return para.strip().strip('"').strip("*").strip()


def parse_answer(text: str) -> str:
    return re.sub(r"^\s*(?:\*\*)?answer\s*[:.-]\s*(?:\*\*)?\s*", "", text.strip(), flags=re.I).strip()


def plan_requests(weights: dict[str, float], pool: dict[str, list[PoolItem]], chunks: list[Chunk],
                  cfg: GenerationConfig, rng: random.Random,
                  chunk_counts: dict[str, int] | None = None) -> list[tuple[str, list[PoolItem], Chunk]]:
    """(task, shown examples, chunk) for each new instruction of the round. chunk_counts: kept rows per chunk id
    so far, for chunk_sampling='under_covered'."""
    coverage = [1 / (1 + (chunk_counts or {}).get(c.id, 0)) for c in chunks] if cfg.chunk_sampling == "under_covered" else None
    plan = []
    for _ in range(cfg.examples_per_round):
        task = sample_task(weights, rng)
        examples = sample_examples(pool[task], cfg.examples_in_prompt, cfg.domain_share, rng)
        plan.append((task, examples, rng.choices(chunks, weights=coverage)[0] if coverage else rng.choice(chunks)))
    return plan


def run_daig_round(teacher: Teacher, plan: list[tuple[str, list[PoolItem], Chunk]], cfg: GenerationConfig,
                   round_idx: int, seed: int, novelty: NoveltyFilter | None = None,
                   embedder=None) -> tuple[list[dict], list[dict], RoundStats]:
    """Two teacher passes (instructions, then answers) over the plan; returns kept rows, rejected rows, stats.

    Instructions that pass the per-request filters then go through the novelty filter as one batch (strict or
    SeDi-style, per cfg.novelty) against `novelty`'s pool; only survivors are sent for an answer.
    """
    t = cfg.teacher
    stats = RoundStats(requests=len(plan))
    ins_requests = [TeacherRequest(instruction_messages(task, ex, chunk), t.instruction_max_tokens, t.temperature, t.top_p, seed * 100003 + round_idx * 1009 + i)
                    for i, (task, ex, chunk) in enumerate(plan)]
    ins_replies = teacher.generate(ins_requests, desc=f"round {round_idx} instructions")

    rejected, pending = [], []
    for i, ((task, examples, chunk), req, reply) in enumerate(zip(plan, ins_requests, ins_replies)):
        row = {"id": f"r{round_idx}-{i:05d}", "round": round_idx, "method": "daig", "task": task, "example_ids": [e.id for e in examples],
               "chunk_id": chunk.id, "teacher_model": teacher.model, "instruction_request": req.key(teacher.model), "filters": []}
        if reply.error:
            rejected.append({**row, "stage": "instruction", "reason": f"teacher_{reply.error}", "raw": reply.text})
            continue
        instruction = parse_instruction(reply.text)
        reason, sim, echo = instruction_problem(instruction, [e.instruction for e in examples], DIRECTIVE.format(task=task_label(task)),
                                                cfg.min_instruction_words, cfg.max_instruction_words, cfg.max_example_similarity)
        row["filters"] = [{"filter": "instruction", "kept": not reason, "reason": reason, "score": round(sim, 4),
                           "max_example_rouge_l": round(sim, 4), "prompt_echo_rouge_l": round(echo, 4)}]
        if reason:
            rejected.append({**row, "stage": "instruction", "reason": reason, "raw": reply.text, "instruction": instruction})
        else:
            pending.append((row, instruction, chunk, reply.text))

    if novelty is not None:  # one batch, so SeDi can pick the most diverse subset
        decisions = filter_batch([ins for _, ins, _, _ in pending], novelty, cfg.novelty, embedder)
        survivors = []
        for (row, instruction, chunk, raw), d in zip(pending, decisions):
            row["filters"].append(d)
            if d["kept"]:
                survivors.append((row, instruction, chunk, raw))
            else:
                rejected.append({**row, "stage": "novelty", "reason": d["reason"], "raw": raw, "instruction": instruction})
        pending = survivors

    ans_requests = [TeacherRequest(answer_messages(ins, chunk), t.answer_max_tokens, t.answer_temperature, t.top_p, seed * 100003 + round_idx * 1009 + 500009 + n)
                    for n, (_, ins, chunk, _) in enumerate(pending)]
    ans_replies = teacher.generate(ans_requests, desc=f"round {round_idx} answers") if ans_requests else []

    kept = []
    for (row, instruction, chunk, _), req, reply in zip(pending, ans_requests, ans_replies):
        row = {**row, "instruction": instruction, "input": "", "context": chunk.text, "answer_request": req.key(teacher.model)}
        answer = parse_answer(reply.text)
        reason = f"teacher_{reply.error}" if reply.error else answer_problem(answer, reply.finish_reason, cfg.max_answer_words)
        row["filters"] = row["filters"] + [{"filter": "answer", "kept": not reason, "reason": reason}]
        if reason:
            rejected.append({**row, "stage": "answer", "reason": reason, "raw": reply.text})
        else:
            kept.append({**row, "output": answer})
    for r in rejected:
        stats.reject(r["reason"])
    return kept, rejected, stats
