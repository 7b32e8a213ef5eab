"""Evol-Instruct (WizardLM, Xu et al. 2023): evolve pool instructions, drop failed evolutions, answer the rest.

Per round: draw items (task by the current weights, then an item of that task uniformly) and an operator
each (uniform over cfg.evol.operators: five in-depth rewrites and in-breadth), ask the teacher to evolve the
instruction, then apply the paper's four elimination rules (Section 3.2, "Elimination Evolving"):
  4. the evolved instruction copies words from the evolving prompt ("given prompt", "#Rewritten Prompt#", ...)
  1. no information gain: the teacher, asked with the paper's equality prompt (Appendix G), says "Equal"
  2. the answer contains "sorry" and is shorter than 80 words
  3. the answer is only punctuation and stop words
Rule 4 needs no teacher call, so it runs first; the answer is only asked for once rule 1 passed, so a failed
evolution costs no answer. A failed evolution is a rejected row and its parent stays in the pool, to be
evolved again later; a successful one is a kept row and joins the pool (kind "evolved"), so later rounds
evolve it further.

Deviations from the paper (cfg.evol.screen_evolved, on by default; False runs the four rules alone):
  screens on the evolved instruction, after rule 4 and before the judge, so a failure costs neither the judge
  nor the answer call. They only add rejections; the paper's rules are unchanged.
  - evolved_refusal: the instruction is itself a refusal ("I'm sorry, but I can't assist ..."); rule 2 only
    reads the answer, so a refused evolution would otherwise be judged and answered.
  - evolved_lost_input: one of depth.py's four rewrites (whose prompt says "do not omit the input") kept under
    half of the distinct content words of the parent's input (or, without one, of the code blocks and quoted
    passages of its instruction). Not applied to breadth (a brand-new prompt by design) nor complicate_input
    (its prompt asks for new data in a drawn format, not to keep the old).
  - evolved_not_a_task: the instruction reads as an answer: it opens like one ("Sure", "Certainly", ...), or
    it asks nothing (no "?", no "please"/"can you"..., no clause opening with a task verb or question word).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from generation.config import EvolConfig, GenerationConfig
from generation.rows import RoundStats, new_row, rejected_row, request_seed, teacher_failure
from generation.data.pool import EvolvedItem, PoolItem, pool_from_refs, pool_refs, sample_task
from generation.methods.templates import EVOL_DEPTH, render
from generation.teacher.backends import Teacher, TeacherReply, TeacherRequest

# The prompts are generation/methods/templates/evol/*.jinja (generation.evol.templates names your own): the system
# message every call is sent with (Evol_Instruct/openai_access.py), one template per operator (depth.py's four
# rewrites and breadth.py's, verbatim, CRLF line breaks and tabs included; complicate_input from the paper's
# Appendix A, which the reference code lacks) and the paper's equality prompt (Appendix G).

# Rule 4: the paper's examples ("given prompt", "rewritten prompt", "#Rewritten Prompt#", "etc.") plus the other
# names the evolving prompts use for themselves; matched case-insensitively, so the #...# forms are covered.
PROMPT_WORDS = ("given prompt", "rewritten prompt", "created prompt", "prompt rewriter", "prompt creator")

# Rule 3's stop words: NLTK's English stop-word list (nltk.corpus.stopwords.words("english"), 179 words); the
# paper does not name a list. Inlined because the NLTK corpus is a separate download.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his himself
she she's her hers herself it it's its itself they them their theirs themselves what which who whom this that that'll
these those am is are was were be been being have has had having do does did doing a an the and but if or because as
until while of at by for with about against between into through during before after above below to from up down in
out on off over under again further then once here there when where why how all any both each few more most other
some such no nor not only own same so than too very s t can will just don don't should should've now d ll m o re ve y
ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn
mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())
SORRY_MAX_WORDS = 80  # rule 2: "contains 'sorry' and is relatively short in length (i.e., less than 80 words)"

# Screens (ours, not the paper's; see the module docstring). Each errs towards keeping: a false rejection loses a
# good evolution, a missed one only costs the judge and answer calls the paper would pay anyway.
# A refusal sentence opens with an apology or a refusal to do the job; a bare "I can't ..." / "I'm unable to ..."
# is not enough, since user prompts often start that way ("I can't get this loop to stop; why?").
REFUSAL = re.compile(r"(i'm sorry|i am sorry|sorry, (but )?i\b|i apologi[sz]e|as an ai( language)?( model| assistant)?,|"
                     r"(unfortunately,? )?(i|we) (can't|cannot|can not|won't|am unable to|'m unable to|am not able to|'m not able to) "
                     r"(assist|help|provide|fulfil|comply|answer|respond|rewrite|complete|do that|create that))")
REFUSAL_SHARE = 0.5  # "most of the text": refusal sentences hold over half its words
LOST_INPUT_OVERLAP = 0.5  # a depth rewrite must keep at least half the distinct content words of the parent's data
INPUT_KEEPING_OPERATORS = frozenset(EVOL_DEPTH)  # depth.py's four, the prompts that say "please do not omit the input"
ANSWER_OPENING = re.compile(r"(sure|certainly|of course|absolutely)\b[\s,.!:]")  # assistant talk, not a user's prompt
# A request: a clause (sentence, list item, or the part after a comma or colon) opening with a task verb or question
# word, or a request phrase anywhere. Code blocks are left out: `return x` is code, not a request.
TASK_VERBS = frozenset("""
write explain describe list name give provide create generate compose summarize summarise translate classify identify find
calculate compute determine solve compare contrast analyze analyse evaluate suggest recommend design develop implement build
make convert rewrite edit correct fix debug sort rank count extract outline discuss define predict estimate propose plan
draft prepare construct derive prove show demonstrate illustrate tell state choose select pick decide categorize categorise
label answer complete fill modify add remove replace update optimize optimise refactor output return print use consider
imagine assume suppose let given using read interpret review assess check verify validate test measure formulate investigate
examine elaborate detail specify arrange organize organise match map paraphrase simplify expand shorten format parse
transform rate score highlight brainstorm argue justify critique pretend act respond reply include ensure recall research
let's how what why which who whom whose when where is are can could would should will does do did
""".split())
REQUEST_PHRASES = re.compile(r"\b(please|can you|could you|would you|will you|help me|i need|i want|i would like|i'd like|"
                             r"your task|you are asked|you must|you should|you need to|you will)\b")


def given_prompt(item: PoolItem) -> str:
    """What the reference evolves: instruction and input joined by CRLF (Evol-Instruct/main.py), even when input is empty."""
    return item.instruction.strip() + "\r\n" + item.input.strip()


def evolve_prompt(operator: str, instruction: str, input_format: str = "", templates: dict | None = None) -> str:
    """The operator's prompt for `instruction` (given_prompt's form); only complicate_input's shows input_format."""
    return render("evol", operator, templates, instruction=instruction, input_format=input_format)


def equality_prompt(first: str, second: str, templates: dict | None = None) -> str:
    return render("evol", "equality", templates, first=first, second=second)


def messages(prompt: str, templates: dict | None = None) -> tuple[tuple[str, str], ...]:
    return (("system", render("evol", "system", templates)), ("user", prompt))


def judge_verdict(text: str) -> str:
    """'not_equal', 'equal' or 'unclear' (only an explicit Equal eliminates)."""
    t = " ".join(text.lower().split())
    if re.search(r"\bnot\s+equal\b", t):
        return "not_equal"
    return "equal" if re.search(r"\bequal\b", t) else "unclear"


def copied_prompt_words(instruction: str) -> str:
    """Rule 4: the first evolving-prompt phrase the evolved instruction contains, or ''."""
    low = instruction.lower()
    return next((w for w in PROMPT_WORDS if w in low), "")


def sorry_and_short(answer: str) -> bool:
    """Rule 2."""
    return "sorry" in answer.lower() and len(answer.split()) < SORRY_MAX_WORDS


def only_stop_words(answer: str) -> bool:
    """Rule 3: no word outside the stop words (punctuation is not a word, so an empty answer fails too)."""
    return all(w in STOP_WORDS for w in re.findall(r"[\w']+", answer.lower()))


def sentences(text: str) -> list[str]:
    return [t for t in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if t.strip()]


def is_refusal(instruction: str) -> bool:
    """Screen evolved_refusal: the first sentence is a refusal, or refusal sentences are most of the text."""
    parts = [re.sub(r"^[\W_]+", "", t.lower()).replace("\u2019", "'") for t in sentences(instruction)]
    if not parts:
        return False
    refused = [t for t in parts if REFUSAL.match(t)]
    total = sum(len(t.split()) for t in parts)
    return parts[0] in refused or sum(len(t.split()) for t in refused) > REFUSAL_SHARE * total


def content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9_]+", text.lower())) - STOP_WORDS


def carried_data(parent: PoolItem) -> str:
    """What a depth rewrite must keep: the parent's input, else the code blocks and quoted passages (3+ words)
    of its instruction (an evolved parent carries its data inline)."""
    if parent.input.strip():
        return parent.input
    blocks = re.findall(r"```.*?```", parent.instruction, flags=re.S)
    quoted = [q for q in re.findall(r'["\u201c]([^"\u201d\n]+)["\u201d]', parent.instruction) if len(q.split()) >= 3]
    return "\n".join(blocks + quoted)


def input_overlap(parent: PoolItem, instruction: str) -> float | None:
    """Screen evolved_lost_input: the share of the parent data's distinct content words found in the evolved
    instruction; None when the parent has no data to carry."""
    data = content_words(carried_data(parent))
    return len(data & content_words(instruction)) / len(data) if data else None


def asks_something(instruction: str) -> bool:
    """A '?', a request phrase, or a clause opening with a task verb or question word (code blocks left out)."""
    low = re.sub(r"```.*?(```|$)", " ", instruction.lower().replace("\u2019", "'"), flags=re.S)
    if "?" in low or REQUEST_PHRASES.search(low):
        return True
    firsts = (re.findall(r"[a-z']+", clause)[:1] for clause in re.split(r"[.!?:;,\n]", low))
    return any(first and first[0] in TASK_VERBS for first in firsts)


def not_a_task(instruction: str) -> bool:
    """Screen evolved_not_a_task: opens like an answer ("Sure, ...") or asks nothing."""
    low = re.sub(r"^[\W_]+", "", instruction.lower())
    return bool(ANSWER_OPENING.match(low + " ")) or not asks_something(instruction)


def screen_evolved(parent: PoolItem, operator: str, instruction: str) -> dict:
    """The screens' filter decision for one evolved instruction (the first failing screen names the reason)."""
    overlap = input_overlap(parent, instruction) if operator in INPUT_KEEPING_OPERATORS else None
    if is_refusal(instruction):
        reason = "evolved_refusal"
    elif overlap is not None and overlap < LOST_INPUT_OVERLAP:
        reason = "evolved_lost_input"
    elif not_a_task(instruction):
        reason = "evolved_not_a_task"
    else:
        reason = ""
    decision = {"filter": "evol_screen", "kept": not reason, "reason": reason}
    if overlap is not None:
        decision["input_overlap"] = round(overlap, 3)
    return decision


def plan_evolutions(pool: dict[str, list[PoolItem]], weights: dict[str, float], cfg: GenerationConfig,
                    rng: random.Random) -> list[tuple[PoolItem, str, str]]:
    """(parent, operator, input format or '') per evolution of the round."""
    plan = []
    formats = [f for f in cfg.evol.input_formats if f.strip()]
    for _ in range(cfg.evol.items_per_round):
        parent = rng.choice(pool[sample_task(weights, rng)])
        operator = rng.choice(cfg.evol.operators)
        plan.append((parent, operator, rng.choice(formats) if operator == "complicate_input" else ""))
    return plan


def run_evol_round(teacher: Teacher, pool: dict[str, list[PoolItem]], weights: dict[str, float], cfg: GenerationConfig,
                   round_idx: int, seed: int, rng: random.Random) -> tuple[list[dict], list[dict], RoundStats]:
    """Evolve, judge, answer; returns kept rows, rejected rows, stats, and appends the successes to `pool`."""
    e = cfg.evol
    base = request_seed(seed, round_idx)
    plan = plan_evolutions(pool, weights, cfg, rng)
    stats = RoundStats(requests=len(plan))
    rejected: list[dict] = []

    def reject(row: dict, stage: str, reason: str, raw: str) -> None:
        rejected.append(rejected_row(row, stage, reason, raw))

    def ask(stage: str, desc: str, rows: list[dict], requests: list[TeacherRequest]) -> Iterator[tuple[dict, TeacherReply]]:
        """One request per row (its key recorded under `stage`); yields the answered rows in order, rejecting the
        failed ones as it goes (so rejections keep row order with the caller's own)."""
        replies = teacher.generate(requests, desc=f"round {round_idx} {desc}") if requests else []
        for row, req, reply in zip(rows, requests, replies):
            row["requests"][stage] = teacher.key(req)
            if reply.error:
                reject(row, stage, teacher_failure(reply), reply.text)
            else:
                yield row, reply

    evo_requests = [TeacherRequest(messages(evolve_prompt(op, given_prompt(p), fmt, e.templates), e.templates), e.max_tokens, e.temperature,
                                   e.top_p, base + i)
                    for i, (p, op, fmt) in enumerate(plan)]
    evo_replies = teacher.generate(evo_requests, desc=f"round {round_idx} evolve")
    pending = []
    for i, ((parent, op, fmt), req, reply) in enumerate(zip(plan, evo_requests, evo_replies)):
        provenance = {"parent_id": parent.id, "parent_instruction": given_prompt(parent), "operator": op,
                      "depth": (parent.depth if isinstance(parent, EvolvedItem) else 0) + 1}
        if fmt:
            provenance["input_format"] = fmt
        row = new_row(f"r{round_idx}-{i:05d}", round_idx, "evol_instruct", parent.task, teacher.model, {"evolve": teacher.key(req)}, provenance)
        evolved = reply.text.strip()  # the reference uses the reply as is
        if reply.error or not evolved:
            reject(row, "evolve", teacher_failure(reply) or "empty_evolution", reply.text)
            continue
        row["instruction"] = evolved
        copied = copied_prompt_words(evolved)
        row["filters"].append({"filter": "evol_prompt_copy", "kept": not copied, "reason": "copies_evolution_prompt" if copied else "", "matched": copied})
        if copied:
            reject(row, "evolve", "copies_evolution_prompt", reply.text)
            continue
        if e.screen_evolved:  # ours, not the paper's: before the judge, so a failure costs no further call
            row["filters"].append(screen_evolved(parent, op, evolved))
            if not row["filters"][-1]["kept"]:
                reject(row, "evolve", row["filters"][-1]["reason"], reply.text)
                continue
        pending.append(row)

    judge_requests = [TeacherRequest(messages(equality_prompt(r["provenance"]["parent_instruction"], r["instruction"], e.templates), e.templates),
                                     e.judge_max_tokens, 0.0, 1.0, base + 200003 + n)  # greedy: a judgement, not a sample (the paper gives no setting)
                      for n, r in enumerate(pending)]
    answerable = []
    for row, reply in ask("equality", "equality", pending, judge_requests):
        verdict = judge_verdict(reply.text)
        row["filters"].append({"filter": "evol_equal", "kept": verdict != "equal", "reason": "no_information_gain" if verdict == "equal" else "",
                               "verdict": verdict, "judgement": reply.text.strip()[:80]})
        if verdict == "equal":
            reject(row, "equality", "no_information_gain", reply.text)
        else:
            answerable.append(row)

    ans_requests = [TeacherRequest(messages(r["instruction"], e.templates), e.answer_max_tokens, e.temperature, e.top_p, base + 400009 + n)
                    for n, r in enumerate(answerable)]
    kept = []
    for row, reply in ask("answer", "answers", answerable, ans_requests):
        answer = reply.text.strip()
        sorry, stop = sorry_and_short(answer), only_stop_words(answer)
        row["filters"].append({"filter": "evol_sorry", "kept": not sorry, "reason": "answer_sorry_short" if sorry else "", "score": len(answer.split())})
        if sorry:
            reject(row, "answer", "answer_sorry_short", reply.text)
            continue
        row["filters"].append({"filter": "evol_stop_words", "kept": not stop, "reason": "answer_only_stop_words" if stop else ""})
        if stop:
            reject(row, "answer", "answer_only_stop_words", reply.text)
            continue
        row = {**row, "input": "", "output": answer, "context": ""}
        row["provenance"]["answer_finish_reason"] = reply.finish_reason
        kept.append(row)
        pool[row["task"]].append(EvolvedItem(id=row["id"], task=row["task"], instruction=row["instruction"], input="", output=answer,
                                             kind="evolved", depth=row["provenance"]["depth"]))
    for r in rejected:
        stats.reject(r["reason"])
    return kept, rejected, stats


# ---- the method contract (loop/methods.py) -------------------------------------------------------------------------

Config = EvolConfig  # its section of the run config: generation.evol
STEERED = True  # the task weights choose which pool items are evolved
STREAMS = False  # run_round returns its rows whole, at the end of its round


@dataclass
class State:
    """What Evol-Instruct carries from round to round: the pool, which grows by the items it evolves."""
    pool: dict[str, list[PoolItem]]

    def to_json(self) -> dict:
        return {"pool": pool_refs(self.pool)}

    def restore(self, saved: dict) -> None:
        """Lay a checkpoint's to_json() over this freshly started state."""
        self.pool = pool_from_refs(saved["pool"], self.pool)


def start(g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list, load_embedder: Callable) -> State:
    return State({t: list(items) for t, items in pool.items()})


def run_round(teacher: Teacher, state: State, g: GenerationConfig, weights: dict[str, float], round_idx: int, seed: int,
              rng: random.Random, closed_book: bool = True) -> tuple[list[dict], list[dict], RoundStats]:
    return run_evol_round(teacher, state.pool, weights, g, round_idx, seed, rng)
