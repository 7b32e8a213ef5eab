"""DAIG: Domain-Adaptive Instruction Generation.

One request per new example: pick a task by the current weights, show the teacher k pool examples of
that task and one domain chunk, and ask for a new instruction grounded in the chunk; then ask for the
answer given instruction + chunk. Unparseable or filtered replies become rejected rows with their raw
text and reason. Every kept row records its provenance.
"""
from __future__ import annotations

import json
import queue
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from generation.config import DaigConfig, GenerationConfig
from generation.data.corpus import Chunk, sampling_weight
from generation.filters.batch import filter_batch
from generation.filters.rules import NoveltyFilter, answer_problem, followed_task, instruction_problem, names_classes, rouge_l
from generation.filters.grounding import (DECLINE, answer_support, defers_to_passage, example_names, instruction_grounding, is_decline, judge_verdict,
                                  refers_to_passage, yes_no_mismatch)
from generation.data.pool import PoolItem, pool_from_refs, pool_refs, sample_examples, sample_task
from generation.filters.novelty import novelty_json, restore_novelty
from generation.methods.templates import render
from generation.rows import RoundStats, chunk_id, new_row, rejected_row, request_seed, teacher_failure
from generation.teacher.backends import Teacher, TeacherRequest

# The prompts are templates (generation/methods/templates/daig/*.jinja; generation.daig.templates names your own).
# Notes on the packaged ones. The passage is the source of the topic and the examples only of the task type: the
# examples come from pools about other things (a new user usually has no domain pool), so the instruction prompt says
# so, and the filters check it. Its directive is also what the echo filter compares against: small teachers often
# restate it.
# A sentence telling the teacher to "say 'the passage'" for text-processing tasks was parroted by the 0.5B teacher
# ("the passage", 8 of 32 replies; LOG.md 2026-12-02); a dangling reference gets the chunk as input anyway.
# The answer's decline rule sits in the system message, the task last: with the rule as the prompt's last line, the 1.5B
# teacher declined 12 of 22 answerable tasks ("What is the function that rebuilds the core schema of a dataclass?"
# on the chunk that names rebuild_dataclass()); this way 3 of 22, each with the passage lacking the answer (LOG.md).

# "Task:", "**New task:**", "**Classification task**:", "Question 3:", "### Instruction" ... (a short label, then a colon).
_PREFIX = re.compile(r"^\s*(?:#+\s*)?(?:\*\*|__)?\s*(?:[\w-]+\s+){0,2}?(?:task|instruction|question|prompt)\s*(?:\d+)?\s*"
                     r"(?:\*\*|__)?\s*[:.)-]\s*(?:\*\*|__)?\s*", re.I)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+")
# "**Explanation of Logfire**: Explain ...", "**Explanation of Logfire:** Explain ..."
_BOLD_LABEL = re.compile(r"^\s*(?:\*\*)?[^*:\n]{1,60}?(?:\*\*\s*:|:\s*\*\*)\s*")
_NEXT_ITEM = re.compile(r"\s+2[.)]\s")  # "1. task 2. another task": keep the first
_INPUT_LABEL = re.compile(r"^\s*(?:\*\*|__)?\s*input\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?", re.I | re.M)
_FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1\s*$", re.M | re.S)
_NO_INPUT = re.compile(r"^\W*(?:none|n/?a|empty|no input|<noinput>)?\W*$", re.I)

def task_label(task: str) -> str:
    return task.replace("_", " ")


def shown_texts(item: PoolItem, shown: str) -> list[str]:
    """What the prompt shows of a pool example: its instruction, and with shown='whole' its input and output."""
    return [item.instruction] + ([t for t in (item.input, item.output) if t] if shown == "whole" else [])


def format_example(item: PoolItem, shown: str) -> str:
    parts = shown_texts(item, shown)
    if shown != "whole":
        return parts[0]
    return item.instruction + (f"\n   Input: {item.input}" if item.input else "") + (f"\n   Output: {item.output}" if item.output else "")


def directive(task: str, templates: dict | None = None, json_replies: bool = False) -> str:
    """The directive that ends the instruction prompt for `task` (templates: generation.daig.templates); json_replies:
    the one asking for a JSON object."""
    return render("daig", "directive_json" if json_replies else "directive", templates, task=task_label(task))


def instruction_messages(task: str, examples: list[PoolItem], chunk: Chunk, shown: str = "instruction",
                         templates: dict | None = None, json_replies: bool = False) -> tuple[tuple[str, str], ...]:
    listing = "\n".join(f"{n}. {format_example(e, shown)}" for n, e in enumerate(examples, 1))
    return (("user", render("daig", "instruction", templates, task=task_label(task), examples=listing, heading=chunk.heading,
                            chunk=chunk.text, directive=directive(task, templates, json_replies))),)


def answer_messages(instruction: str, chunk: Chunk, input_text: str = "", templates: dict | None = None) -> tuple[tuple[str, str], ...]:
    extra = input_text if input_text != chunk.text else ""  # an input that is the chunk is shown once, as the passage
    return (("system", render("daig", "answer_system", templates, decline=DECLINE)),
            ("user", render("daig", "answer", templates, heading=chunk.heading, chunk=chunk.text, instruction=instruction, input=extra)))


def judge_instruction_prompt(chunk_text: str, instruction: str, input_text: str, templates: dict | None = None) -> str:
    return render("daig", "judge_instruction", templates, chunk=chunk_text, instruction=f"{instruction}\n{input_text}".strip())


def judge_answer_prompt(chunk_text: str, instruction: str, input_text: str, answer: str, templates: dict | None = None) -> str:
    return render("daig", "judge_answer", templates, chunk=chunk_text, instruction=f"{instruction}\n{input_text}".strip(), answer=answer)


def parse_instruction(text: str) -> str:
    """The instruction alone (see parse_task)."""
    return parse_task(text)[0]


def parse_task(text: str) -> tuple[str, str]:
    """(instruction, input) from a reply: the first paragraph, without 'Task:' / '**...**:' labels, list numbering
    or wrapping quotes; an 'Input:' part or a code fence right after it becomes the input."""
    text = text.strip()
    label = _INPUT_LABEL.search(text)
    head, inp = (text[:label.start()], text[label.end():]) if label else (text, "")
    if not label and (fence := _FENCE.search(head)) and head[:fence.start()].strip():
        head, inp = head[:fence.start()], fence.group(0)
    para = next((p for p in re.split(r"\n\s*\n", head.strip()) if p.strip()), "")
    para = _NUMBERING.sub("", _BOLD_LABEL.sub("", _PREFIX.sub("", para.strip())))
    para = _NEXT_ITEM.split(" ".join(para.split()), maxsplit=1)[0]
    inp = inp.strip("\n").rstrip()
    inp = "" if _NO_INPUT.match(inp) else inp.strip().strip('"') if "\n" not in inp.strip() else inp
    return para.strip().strip('"').strip("*").strip(), inp


def parse_task_json(text: str) -> tuple[str, str] | None:
    """(instruction, input) from a reply that is one JSON object {"instruction": str, "input"?: str} (a ```json fence
    around it is allowed); None for any other reply, which the caller reads with parse_task."""
    body = _JSON_FENCE.sub(r"\1", text.strip()).strip()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("instruction"), str) or not obj["instruction"].strip():
        return None
    inp = obj.get("input") or ""
    return " ".join(obj["instruction"].split()), (inp if isinstance(inp, str) else json.dumps(inp, ensure_ascii=False)).strip()


_JSON_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.S)


def parse_answer(text: str) -> str:
    return re.sub(r"^\s*(?:\*\*)?answer\s*[:.-]\s*(?:\*\*)?\s*", "", text.strip(), flags=re.I).strip()


def plan_requests(weights: dict[str, float], pool: dict[str, list[PoolItem]], chunks: list[Chunk],
                  cfg: GenerationConfig, rng: random.Random, chunk_counts: dict[str, int] | None = None,
                  requested: dict[str, int] | None = None) -> list[tuple[str, list[PoolItem], Chunk]]:
    """(task, shown examples, chunk) for each new instruction of the round.

    chunk_counts: kept rows per chunk id so far (for 'under_covered'); requested: requests per chunk id in earlier
    rounds (for 'stratified'). Chunks that are mostly code or logs get cfg.daig.code_chunks' weight (0 skips them).
    """
    weight = {c.id: sampling_weight(c, cfg.daig.code_chunks, cfg.daig.max_code_share) for c in chunks}
    if not any(weight.values()):  # a corpus of nothing but code under 'skip': better used than empty
        weight = dict.fromkeys(weight, 1.0)
    eligible = [c for c in chunks if weight[c.id] > 0]
    if cfg.daig.chunk_sampling == "stratified":
        pick = _stratified(eligible, weight, dict(requested or {}), rng)
    elif cfg.daig.chunk_sampling == "under_covered":
        cover = [weight[c.id] / (1 + (chunk_counts or {}).get(c.id, 0)) for c in eligible]
        pick = lambda: rng.choices(eligible, weights=cover)[0]  # noqa: E731
    else:
        pick = lambda: rng.choices(eligible, weights=[weight[c.id] for c in eligible])[0]  # noqa: E731
    plan = []
    for _ in range(cfg.daig.examples_per_round):
        task = sample_task(weights, rng)
        examples = sample_examples(pool[task], cfg.daig.examples_in_prompt, cfg.daig.domain_share, rng)
        plan.append((task, examples, pick()))
    return plan


def _stratified(chunks: list[Chunk], weight: dict[str, float], requested: dict[str, int], rng: random.Random):
    """A picker that spreads requests over documents first (fewest requests so far), then over that document's
    chunks (fewest requests per unit of weight); ties are broken at random."""
    by_doc: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_doc.setdefault(c.source, []).append(c)
    doc_count = {d: sum(requested.get(c.id, 0) for c in cs) for d, cs in by_doc.items()}

    def pick() -> Chunk:
        low = min(doc_count.values())
        doc = rng.choice([d for d, n in doc_count.items() if n == low])
        score = {c.id: (requested.get(c.id, 0) + 1) / weight[c.id] for c in by_doc[doc]}
        best = min(score.values())
        chunk = rng.choice([c for c in by_doc[doc] if score[c.id] == best])
        requested[chunk.id] = requested.get(chunk.id, 0) + 1
        doc_count[doc] += 1
        return chunk
    return pick


def judge(teacher: Teacher, prompts: list[str], cfg: GenerationConfig, seed0: int, stage: str, no_reason: str) -> list[tuple[str, dict, str]]:
    """One greedy yes/no call per prompt, cached and counted like every call: (reason or '', decision, raw reply)."""
    reqs = [TeacherRequest((("user", p),), cfg.grounding.judge_max_tokens, 0.0, 1.0, seed0 + n) for n, p in enumerate(prompts)]
    out = []
    for req, reply in zip(reqs, teacher.generate(reqs, desc=stage.replace("_", " ")) if reqs else []):
        verdict = "" if reply.error else judge_verdict(reply.text)
        reason = teacher_failure(reply) or {"yes": "", "no": no_reason}.get(verdict, "judge_unclear")
        out.append((reason, {"filter": stage, "kept": not reason, "reason": reason, "verdict": verdict, "request": teacher.key(req)}, reply.text))
    return out


def check_instruction(instruction: str, input_text: str, task: str, examples: list[PoolItem], chunk: Chunk,
                      cfg: GenerationConfig, closed_book: bool, tasks: tuple[str, ...] = ()) -> tuple[str, str, str, dict]:
    """Per-request checks of a parsed instruction, cheapest first: ('' or reason, task label, input, decision).
    tasks: the pool's task names; an instruction is relabelled only to one of them."""
    shown = [t for e in examples for t in shown_texts(e, cfg.daig.examples_shown)]
    reason, sim, echo = instruction_problem(instruction, shown, directive(task, cfg.daig.templates, cfg.daig.json_replies), cfg.daig.min_instruction_words,
                                            cfg.daig.max_instruction_words, cfg.daig.max_example_similarity, input_text)
    followed = followed_task(instruction, task)
    grounding = instruction_grounding(f"{instruction} {input_text}", f"{chunk.heading} {chunk.text}")
    decision = {"filter": "instruction", "kept": False, "reason": reason, "score": round(sim, 4), "max_example_rouge_l": round(sim, 4),
                "prompt_echo_rouge_l": round(echo, 4), "grounding": round(grounding, 4), "followed_task": followed}
    if not reason and followed != task and cfg.daig.task_mismatch == "reject":
        reason = "task_mismatch"
    if not reason and followed == "classification" and not names_classes(instruction):
        reason = "classes_not_named"
    if not reason and grounding < cfg.grounding.min_instruction_grounding:
        reason = "ungrounded_instruction"
    if not reason and closed_book and not input_text:
        local = example_names(instruction, chunk.text)
        if local:
            decision["example_names"] = local
        if local or refers_to_passage(instruction):
            if cfg.daig.dangling_reference == "reject":
                reason = "dangling_reference"
            else:  # the student cannot see the passage (or the example code) it is pointed at: give it the passage
                input_text, decision["input_from"] = chunk.text, "chunk"
    if not reason and followed != task and cfg.daig.task_mismatch == "relabel" and followed in tasks:
        decision["relabelled_from"] = task
        task = followed
    decision.update(kept=not reason, reason=reason)
    return reason, task, input_text, decision


def check_answer(answer: str, reply, instruction: str, input_text: str, chunk: Chunk, cfg: GenerationConfig) -> tuple[str, dict]:
    """('' or reason, decision) for an answer: a teacher error, a decline, the length rules, then its support."""
    support, numbers = answer_support(answer, f"{chunk.heading} {chunk.text} {instruction} {input_text}")
    decision = {"filter": "answer", "kept": False, "support": round(support, 4), "unsupported_numbers": numbers}
    reason = teacher_failure(reply)
    if not reason and is_decline(answer):
        reason = "declined"
    if not reason and defers_to_passage(answer):
        reason = "answer_defers"
    if not reason and (yes_no_mismatch(f"{instruction} {input_text}", answer) or rouge_l(answer, instruction) >= 0.9):
        reason = "answer_not_task"  # a bare yes/no to another kind of task, or the task said back
    reason = reason or answer_problem(answer, reply.finish_reason, cfg.daig.max_answer_words)
    if not reason and support < cfg.grounding.min_answer_support:
        reason = "answer_unsupported"
    if not reason and numbers and cfg.grounding.reject_unsupported_numbers:
        reason = "answer_unsupported_number"
    decision.update(kept=not reason, reason=reason)
    return reason, decision


def run_daig_round(teacher: Teacher, plan: list[tuple[str, list[PoolItem], Chunk]], cfg: GenerationConfig,
                   round_idx: int, seed: int, novelty: NoveltyFilter | None = None,
                   embedder=None, closed_book: bool = True, tasks: tuple[str, ...] = (),
                   emit: Callable[[list[dict], list[dict]], None] | None = None) -> tuple[list[dict], list[dict], RoundStats]:
    """Teacher passes over the plan (instructions, optional judge, answers, optional judge); returns kept rows,
    rejected rows, stats.

    Instructions that pass the per-request checks then go through the novelty filter (strict or SeDi-style, per
    cfg.novelty) against `novelty`'s pool; only survivors are judged and sent for an answer. With
    daig.overlap_stages and a concurrent teacher, a row's answer goes out as soon as it and every row before it have
    passed (strict novelty decides in plan order, so the decisions and answer seeds are those of the stage-by-stage
    round); sedi and the instruction judge decide over the whole batch, so those rounds go stage by stage.
    closed_book: the student will not see the chunk (training.include_context false), so an instruction that
    points at "the passage" needs the passage as its input. tasks: the pool's task names (for task_mismatch).
    emit: given, it gets each window's (kept, rejected) rows as soon as they are decided, and the round holds none
    of them (the returned lists are empty): a 100,000-row round goes to disk a window at a time.
    """
    dc = cfg.daig
    base = request_seed(seed, round_idx)
    stats = RoundStats(requests=len(plan), chunks=len({c.id for _, _, c in plan}), documents=len({c.source for _, _, c in plan}))
    kept, rejected = [], []
    emit = emit or (lambda k, r: (kept.extend(k), rejected.extend(r)))
    # A window of the plan at a time, so a large round holds one window's requests and replies (sedi decides over the
    # whole batch, so its rounds are one window). Seeds continue across windows: one window is the round as before.
    size = len(plan) if cfg.novelty.filter == "sedi" else dc.window
    sent = {"answers": 0, "instruction_judge": 0, "answer_judge": 0}
    for lo in range(0, len(plan), size or 1):
        k, r = _window(teacher, plan, lo, min(lo + size, len(plan)), cfg, round_idx, base, sent, novelty, embedder, closed_book, tasks)
        for x in r:
            stats.reject(x["reason"])
        emit(k, r)
    return kept, rejected, stats


def _window(teacher: Teacher, plan: list, lo: int, hi: int, cfg: GenerationConfig, round_idx: int, base: int, sent: dict,
            novelty, embedder, closed_book: bool, tasks: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Rows lo..hi-1 of the round's plan, as run_daig_round describes; `sent` counts the answers and judge prompts of
    earlier windows (their seeds continue) and is updated."""
    dc, gr = cfg.daig, cfg.grounding
    ins_requests = [TeacherRequest(instruction_messages(task, ex, chunk, dc.examples_shown, dc.templates, dc.json_replies), dc.instruction_max_tokens,
                                   dc.temperature, dc.top_p, base + lo + j, json_object=dc.json_replies)
                    for j, (task, ex, chunk) in enumerate(plan[lo:hi])]
    rejected_ins, rejected_nov, rejected_judge = [], [], []  # by stage, so either path lists them alike

    def checked(j: int, reply) -> tuple | None:
        """Row lo + j's instruction reply parsed and checked: its pending item, or None (a rejected row is recorded)."""
        i = lo + j
        (task, examples, chunk), req = plan[i], ins_requests[j]
        row = new_row(f"r{round_idx}-{i:05d}", round_idx, "daig", task, teacher.model, {"instruction": teacher.key(req)},
                      {"example_ids": [e.id for e in examples], "chunk_id": chunk.id, "heading": chunk.heading})
        if reply.error or reply.finish_reason == "length":  # a cut-off instruction is half a task
            rejected_ins.append(rejected_row(row, "instruction", teacher_failure(reply) or "instruction_truncated", reply.text))
            return None
        parsed = parse_task_json(reply.text) if dc.json_replies else None
        instruction, input_text = parsed or parse_task(reply.text)
        if dc.json_replies:  # which parser read it (a JSON-mode teacher may still answer in prose)
            row["provenance"]["reply_format"] = "json" if parsed else "text"
        reason, row["task"], input_text, decision = check_instruction(instruction, input_text, task, examples, chunk, cfg, closed_book, tasks)
        row["filters"] = [decision]
        if reason:
            rejected_ins.append(rejected_row(row, "instruction", reason, reply.text, instruction=instruction, input=input_text))
            return None
        row["provenance"]["requested_task"] = task
        return (row, instruction, input_text, chunk, reply.text)

    def novel(items: list[tuple]) -> list[tuple]:
        """The novelty filter over items (one batch, so SeDi can pick the most diverse subset); the survivors."""
        if novelty is None:
            return items
        survivors = []
        for item, d in zip(items, filter_batch([ins for _, ins, _, _, _ in items], novelty, cfg.novelty, embedder)):
            item[0]["filters"].append(d)
            if d["kept"]:
                survivors.append(item)
            else:
                rejected_nov.append(rejected_row(item[0], "novelty", d["reason"], item[4], instruction=item[1], input=item[2]))
        return survivors

    def answer_request(n: int, item: tuple) -> TeacherRequest:  # n: the item's place among the round's answers (its seed)
        _, ins, inp, chunk, _ = item
        return TeacherRequest(answer_messages(ins, chunk, inp, dc.templates), dc.answer_max_tokens, dc.answer_temperature, dc.top_p,
                              base + 500009 + sent["answers"] + n)

    ins_desc, ans_desc = f"round {round_idx} instructions", f"round {round_idx} answers"
    if dc.overlap_stages and teacher.concurrent and cfg.novelty.filter != "sedi" and gr.judge not in ("instruction", "both"):
        pending, ans_requests, ans_replies = overlapped(teacher, ins_requests, ins_desc, lambda i, r: novel([it]) if (it := checked(i, r)) else [],
                                                        answer_request, ans_desc)
    else:
        ins_replies = teacher.generate(ins_requests, desc=ins_desc)
        pending = novel([item for i, reply in enumerate(ins_replies) if (item := checked(i, reply))])
        if gr.judge in ("instruction", "both"):
            verdicts = judge(teacher, [judge_instruction_prompt(c.text, ins, inp, dc.templates) for _, ins, inp, c, _ in pending],
                             cfg, base + 700001 + sent["instruction_judge"], "instruction_judge", "judge_ungrounded")
            sent["instruction_judge"] += len(verdicts)
            survivors = []
            for item, (reason, d, raw) in zip(pending, verdicts):
                item[0]["filters"].append(d)
                if reason:
                    rejected_judge.append(rejected_row(item[0], "instruction_judge", reason, raw, instruction=item[1], input=item[2]))
                else:
                    survivors.append(item)
            pending = survivors
        ans_requests = [answer_request(n, item) for n, item in enumerate(pending)]
        ans_replies = teacher.generate(ans_requests, desc=ans_desc) if ans_requests else []
    rejected = rejected_ins + rejected_nov + rejected_judge
    sent["answers"] += len(ans_requests)

    answered = []
    for (row, instruction, input_text, chunk, _), req, reply in zip(pending, ans_requests, ans_replies):
        row = {**row, "instruction": instruction, "input": input_text, "context": chunk.text,
               "requests": {**row["requests"], "answer": teacher.key(req)}}
        answer = parse_answer(reply.text)
        reason, decision = check_answer(answer, reply, instruction, input_text, chunk, cfg)
        row["filters"] = row["filters"] + [decision]
        if reason:
            rejected.append(rejected_row(row, "answer", reason, reply.text))
        else:
            answered.append({**row, "output": answer})

    kept = answered
    if gr.judge in ("answer", "both"):
        verdicts = judge(teacher, [judge_answer_prompt(r["context"], r["instruction"], r["input"], r["output"], dc.templates) for r in answered],
                         cfg, base + 900007 + sent["answer_judge"], "answer_judge", "judge_unsupported")
        sent["answer_judge"] += len(verdicts)
        kept = []
        for row, (reason, d, raw) in zip(answered, verdicts):
            row["filters"] = row["filters"] + [d]
            if reason:
                rejected.append(rejected_row(row, "answer_judge", reason, raw))
            else:
                kept.append(row)
    return kept, rejected


def overlapped(teacher: Teacher, first: list[TeacherRequest], desc: str, admit: Callable[[int, object], list],
               follow: Callable[[int, object], TeacherRequest], follow_desc: str, chunk: int = 8) -> tuple[list, list, list]:
    """Two dependent teacher stages at once: `first` goes out whole; as its replies arrive they are handed to
    admit(i, reply) in request order (so an order-dependent filter decides as it would over the whole stage), and
    each item it returns gets follow(n, item), its n-th second-stage request, sent in small batches while the first
    stage is still out. The teacher shares one concurrency limit between the calls, so the second stage fills the
    first's tail. Returns (items, second-stage requests, their replies), in order."""
    arrived: queue.Queue = queue.Queue()
    items, requests, calls = [], [], []
    pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="teacher-stage")
    try:
        stage = pool.submit(teacher.generate, first, desc, on_reply=lambda i, reply: arrived.put((i, reply)))
        got, next_i, sent = {}, 0, 0
        while next_i < len(first):
            try:
                i, reply = arrived.get(timeout=0.05)
                got[i] = reply
            except queue.Empty:
                if stage.done() and arrived.empty():
                    stage.result()  # raises what stopped the stage; a stage that ended with replies missing is a bug
                    raise RuntimeError(f"{desc}: the teacher returned without a reply for request {next_i}")
            while next_i in got:
                for item in admit(next_i, got.pop(next_i)):
                    requests.append(follow(len(items), item))
                    items.append(item)
                next_i += 1
            ready = len(requests) - sent
            if ready and (ready >= chunk or next_i == len(first) or arrived.empty()):
                calls.append(pool.submit(teacher.generate, requests[sent:], follow_desc))
                sent = len(requests)
        stage.result()
        replies = [reply for call in calls for reply in call.result()]
    except BaseException:  # a failed stage or Ctrl-C: stop the calls in flight and those not started, then raise
        pool.shutdown(wait=False, cancel_futures=True)
        teacher.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
    return items, requests, replies


# ---- the method contract (loop/methods.py) -------------------------------------------------------------------------

Config = DaigConfig  # its section of the run config: generation.daig
STEERED = True  # the task weights choose which task each request is about
STREAMS = True  # run_round hands its rows to emit a window at a time (loop/methods.py)


@dataclass
class State:
    """What DAIG carries from round to round."""
    pool: dict[str, list[PoolItem]]
    chunks: list[Chunk]
    novelty: NoveltyFilter
    embedder: object = None  # an Embedder for sedi's embedding distance, or None (ROUGE-L)
    novelty_base: int = 0  # texts start() put in the novelty pool (a checkpoint keeps only those added later)
    chunk_counts: dict[str, int] = field(default_factory=dict)  # kept rows per chunk so far (stratified sampling)
    chunk_requests: dict[str, int] = field(default_factory=dict)  # requests per chunk so far (stratified sampling)

    def to_json(self) -> dict:
        return {"pool": pool_refs(self.pool), **novelty_json(self.novelty, self.novelty_base),
                "chunk_counts": self.chunk_counts, "chunk_requests": self.chunk_requests}

    def restore(self, saved: dict) -> None:
        """Lay a checkpoint's to_json() over this freshly started state."""
        self.pool = pool_from_refs(saved["pool"], self.pool)
        restore_novelty(self.novelty, saved)
        self.chunk_counts, self.chunk_requests = dict(saved["chunk_counts"]), dict(saved.get("chunk_requests", {}))


def start(g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list[Chunk], load_embedder: Callable) -> State:
    """The novelty pool starts with every pool instruction."""
    novelty = NoveltyFilter(g.novelty.threshold, g.novelty.no_token_text)
    novelty.add([item.instruction for items in pool.values() for item in items])
    return State(pool, chunks, novelty, load_embedder(), len(novelty.texts))


def run_round(teacher: Teacher, state: State, g: GenerationConfig, weights: dict[str, float], round_idx: int, seed: int,
              rng: random.Random, closed_book: bool = True,
              emit: Callable[[list[dict], list[dict]], None] | None = None) -> tuple[list[dict], list[dict], RoundStats]:
    """emit: as run_daig_round's."""
    plan = plan_requests(weights, state.pool, state.chunks, g, rng, state.chunk_counts, state.chunk_requests)
    for _, _, chunk in plan:
        state.chunk_requests[chunk.id] = state.chunk_requests.get(chunk.id, 0) + 1
    kept_all, rejected_all = [], []

    def counted(kept: list[dict], rejected: list[dict]) -> None:
        for row in kept:
            state.chunk_counts[chunk_id(row)] = state.chunk_counts.get(chunk_id(row), 0) + 1
        if emit:
            emit(kept, rejected)
        else:
            kept_all.extend(kept)
            rejected_all.extend(rejected)

    stats = run_daig_round(teacher, plan, g, round_idx, seed, state.novelty, state.embedder, closed_book, tuple(state.pool), counted)[2]
    return kept_all, rejected_all, stats
