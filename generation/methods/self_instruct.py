"""Self-Instruct (Wang et al., 2023), faithful to yizhongw/self-instruct (Apache-2.0).

One round is one of the reference's batches, end to end:
1. prompts_per_round prompts, each listing 8 instructions (2 machine-written when there are any, the rest seeds,
   shuffled), numbered as bootstrap_instructions.py encodes them; the teacher continues the list.
2. A reply cut by max_tokens is dropped whole; the others are split at the numbering and pass its heuristics.
3. The novelty filter (ROUGE-L against seeds + every instruction kept so far); survivors join `machine`.
4. Classification identification (identify_clf_or_not.py: its few-shot template, greedy, 3 tokens).
5. Instances (generate_instances.py): output-first for classification tasks, input-first otherwise, greedy.
6. Instance clean-up (prepare_for_finetuning.py): parse, drop invalid and duplicate instances, at most 5 per task.

Chat teachers get each completion-style prompt as one user message. Where the reference decodes with
temperature 0 and top_p 0 we send temperature 0 with top_p 1.0: greedy either way, and vLLM rejects top_p=0.
Every dropped candidate becomes a rejected row with its stage, reason, raw teacher text and filter decisions.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Callable

from generation.config import GenerationConfig, SelfInstructConfig
from generation.rows import RoundStats, new_row, rejected_row, request_seed, teacher_failure
from generation.filters.batch import filter_batch
from generation.filters.heuristics import heuristic_verdict
from generation.data.pool import PoolItem
from generation.data.seeds import SeedState, SeedTask, start_from_seeds
from generation.filters.novelty import NoveltyFilter
from generation.methods.templates import render
from generation.teacher.backends import Teacher, TeacherRequest

METHOD = "self_instruct"
# bootstrap_instructions.py: the request's stop sequences and the heuristics of post_process_gpt3_response.
PROMPT_STOP = ("\n\n", "\n16", "16.", "16 .")
# identify_clf_or_not.py: max_tokens=3, temperature=0, top_p=0, stop ["\n", "Task"]; the label is the stripped reply
# being exactly one of these (generate_instances.py / prepare_for_finetuning.py).
CLASSIFY_MAX_TOKENS = 3
CLASSIFY_STOP = ("\n", "Task")
CLASSIFY_YES = ("Yes", "yes", "YES")
INSTANCE_PRESENCE_PENALTY = 1.5  # generate_instances.py
# Request-seed offsets per stage, so no two requests of a round share a seed.
CLASSIFY_OFFSET, INSTANCE_OFFSET = 200003, 400009

# The prompts, the reference's few-shot templates verbatim, are in generation/methods/templates/self_instruct/*.jinja
# (generation.self_instruct.templates names your own).


# ---- 1. prompts -------------------------------------------------------------------------------------------------

def encode_prompt(instructions: list[str], classification: bool = False, templates: dict | None = None) -> str:
    """bootstrap_instructions.encode_prompt: a numbered list the teacher continues at the next number."""
    shown = [re.sub(r"\s+", " ", instruction).strip().rstrip(":") for instruction in instructions]
    return render("self_instruct", "instructions", templates, instructions=shown, classification=classification)


def sample_prompt_instructions(seeds: list[SeedTask], machine: list[str], k: int, n_machine: int,
                               rng: random.Random) -> list[tuple[str, str]]:
    """(instruction, seed id or '' when machine-written) for one prompt, drawn exactly as the reference draws.

    The reference calls random.sample(machine, min(2, len)), random.sample(seeds, 8 - that), random.shuffle on
    the global generator; the same calls on `rng` in the same order draw the same items (shuffling pairs consumes
    the generator as shuffling the strings does: it depends only on the length).
    """
    chosen = [(text, "") for text in rng.sample(machine, min(n_machine, len(machine)))]
    chosen += [(s.instruction, s.id) for s in rng.sample(seeds, k - len(chosen))]
    rng.shuffle(chosen)
    return chosen


def instruction_request(shown: list[tuple[str, str]], sc: SelfInstructConfig, seed: int) -> TeacherRequest:
    prompt = encode_prompt([text for text, _ in shown], sc.classification_seeds_only, sc.templates)
    return TeacherRequest((("user", prompt),), sc.max_tokens, sc.temperature, sc.top_p, seed, PROMPT_STOP, sc.presence_penalty)


# ---- 2. post-processing -----------------------------------------------------------------------------------------

def split_reply(text: str) -> list[str]:
    """The reply's instructions as post_process_gpt3_response reads them: split at '\\n<n>. ', whitespace collapsed,
    str.capitalize()d (which lower-cases the rest, as the reference does), empty pieces left out.

    One addition: a '\\n' is put before the text, so a chat reply that restates the number ('9. Write ...') loses it
    like every later item; a completion continues after '9.' with a space, so its split is unchanged.
    """
    pieces = (re.sub(r"\s+", " ", p).strip().capitalize() for p in re.split(r"\n\d+\s?\. ", "\n" + text))
    return [p for p in pieces if p]


# ---- 4. classification identification ---------------------------------------------------------------------------

def classify_prompt(instruction: str, templates: dict | None = None) -> str:
    return render("self_instruct", "classify", templates, instruction=instruction.strip())


def is_classification_reply(text: str) -> bool:
    """Exactly the reference's test: a chat reply 'Yes.' counts as No there, and here."""
    return text.strip() in CLASSIFY_YES


# ---- 5. instances -----------------------------------------------------------------------------------------------

def instance_prompt(instruction: str, classification: bool, templates: dict | None = None) -> str:
    name = "instances_classification" if classification else "instances_generation"
    return render("self_instruct", name, templates, instruction=instruction.strip())


def instance_request(instruction: str, classification: bool, sc: SelfInstructConfig, seed: int) -> TeacherRequest:
    # The reference sends 300 max tokens for a batch of 5 with any classification task, else 350 ("the clf template
    # is longer"); we apply that per request, so a request's tokens do not depend on its neighbours.
    max_tokens = sc.clf_instance_max_tokens if classification else sc.gen_instance_max_tokens
    stop = (f"Example {sc.max_instances + 1}", "Task:")
    return TeacherRequest((("user", instance_prompt(instruction, classification, sc.templates)),), max_tokens, 0.0, 1.0, seed, stop,
                          INSTANCE_PRESENCE_PENALTY)


def parse_input_output(text: str) -> tuple[str, str]:
    """prepare_for_finetuning.parse_input_output."""
    if re.findall(r"Output\s*\d*\s*:", text):
        inst_input = re.split(r"Output\s*\d*\s*:", text)[0].strip()
        inst_output = re.split(r"Output\s*\d*\s*:", text)[1].strip()
    else:
        inst_input, inst_output = "", text.strip()
    if re.findall(r"Input\s*\d*\s*:", inst_output):  # several input/output pairs in one: keep the first output
        inst_output = re.split(r"Input\s*\d*\s*:", inst_output)[0].strip()
    return re.sub(r"^Input\s*\d*\s*:", "", inst_input).strip(), inst_output


def parse_instances(text: str, classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs in reply order, before clean-up (parse_instances_for_{classification,generation}_task)."""
    if classification:
        if "Class label:" not in text:
            return []
        pairs = []
        for piece in text.split("Class label:")[1:]:
            fields = piece.strip().split("\n", 1)  # the label, then the input (if any)
            pairs.append((fields[1].strip() if len(fields) == 2 else "", fields[0].strip()))
        return pairs
    text = text.strip()
    if re.findall(r"Example\s?\d*\.?", text):
        pieces = [p.strip() for p in re.split(r"Example\s?\d*\.?", text) if p.strip()]
        return [tuple(x.strip() for x in parse_input_output(p)) for p in pieces]
    if re.findall(r"Output\s*\d*\s*:", text):  # one input/output pair
        return [tuple(x.strip() for x in parse_input_output(text))]
    return []


def clean_instances(pairs: list[tuple[str, str]], truncated: bool, max_instances: int,
                    rng: random.Random) -> tuple[list[tuple[str, str]], list[tuple[tuple[str, str], str]]]:
    """(kept, [(dropped pair, reason)]) by prepare_for_finetuning's rules, in its order.

    The reference removes exact duplicates with list(set(...)), whose order changes with Python's string hashing,
    then random.sample()s at most 5; we keep first occurrences in order, so the draw from `rng` is reproducible.
    """
    dropped = []
    if truncated and pairs:  # "if the generation stops because of length, we remove the last instance"
        dropped.append((pairs[-1], "truncated_instance"))
        pairs = pairs[:-1]
    valid = []
    for inp, out in pairs:  # filter_invalid_instances
        reason = ("input_equals_output" if inp == out else "empty_output" if out == "" else
                  "ends_with_colon" if inp.strip().endswith(":") or out.strip().endswith(":") else "")
        if reason:
            dropped.append(((inp, out), reason))
        else:
            valid.append((inp, out))
    outputs: dict[str, set[str]] = {}
    for inp, out in valid:  # filter_duplicate_instances: a non-empty input with two outputs spoils the whole task
        if inp:
            outputs.setdefault(inp, set()).add(out)
    if any(len(outs) > 1 for outs in outputs.values()):
        return [], dropped + [(p, "same_input_different_output") for p in valid]
    unique = list(dict.fromkeys(valid))
    dropped += _duplicates(valid)
    kept = rng.sample(unique, min(len(unique), max_instances))
    dropped += [(p, "over_max_instances") for p in unique if p not in kept]
    return kept, dropped


def _duplicates(pairs: list[tuple[str, str]]) -> list[tuple[tuple[str, str], str]]:
    seen, out = set(), []
    for p in pairs:
        if p in seen:
            out.append((p, "duplicate"))
        seen.add(p)
    return out


# ---- the round --------------------------------------------------------------------------------------------------

def run_self_instruct_round(teacher: Teacher, seeds: list[SeedTask], machine: list[str], novelty, cfg: GenerationConfig,
                            round_idx: int, seed: int, rng: random.Random,
                            embedder=None) -> tuple[list[dict], list[dict], RoundStats]:
    """One Self-Instruct batch: kept rows (one per cleaned instance), rejected rows, stats.

    `machine` (machine-written instructions so far) gets every instruction the novelty filter keeps, as in the
    reference, whether or not instances follow. stats.requests counts instruction candidates parsed from replies.
    """
    sc = cfg.self_instruct
    shown_from = [s for s in seeds if s.is_classification] if sc.classification_seeds_only else seeds
    check_seed_count(len(shown_from), sc)
    base = request_seed(seed, round_idx)
    stats = RoundStats()
    plans = [sample_prompt_instructions(shown_from, machine, sc.num_prompt_instructions, sc.num_machine_instructions, rng)
             for _ in range(sc.prompts_per_round)]
    requests = [instruction_request(shown, sc, base + i) for i, shown in enumerate(plans)]
    replies = teacher.generate(requests, desc=f"round {round_idx} self-instruct instructions")

    rejected, candidates = [], []
    for p, (shown, req, reply) in enumerate(zip(plans, requests, replies)):
        head = new_row("", round_idx, METHOD, "", teacher.model, {"instruction": teacher.key(req)}, prompt_provenance(p, shown))
        if reply.error or reply.finish_reason == "length":  # the reference drops a reply cut by length whole
            reason = teacher_failure(reply) or "reply_truncated"
            rejected.append(rejected_row(head, "instruction", reason, reply.text, filters=[{"filter": "reply", "kept": False, "reason": reason}]))
            continue
        for inst in split_reply(reply.text):
            stats.requests += 1
            verdict = heuristic_verdict(inst)
            if verdict["kept"]:
                candidates.append((head, inst, reply.text, verdict))
            else:
                rejected.append(rejected_row(head, "instruction", verdict["reason"], reply.text, instruction=inst, filters=[verdict]))

    tasks = []
    decisions = filter_batch([c[1] for c in candidates], novelty, cfg.novelty, embedder) if candidates else []
    for (head, inst, raw, verdict), decision in zip(candidates, decisions):
        if decision["kept"]:
            machine.append(inst)
            tasks.append((head, inst, raw, [verdict, decision]))
        else:
            rejected.append(rejected_row(head, "novelty", decision["reason"], raw, instruction=inst, filters=[verdict, decision]))

    kept, more = instances_for(teacher, tasks, sc, base, round_idx, rng)
    rejected += more
    for j, row in enumerate(rejected):
        row["id"] = f"r{round_idx}-x{j:05d}"
        stats.reject(row["reason"])
    return kept, rejected, stats


def instances_for(teacher: Teacher, tasks: list, sc: SelfInstructConfig, base: int, round_idx: int,
                  rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Stages 4-6 for the instructions the filters kept: identify, generate instances, clean up."""
    clf_requests = [TeacherRequest((("user", classify_prompt(inst, sc.templates)),), CLASSIFY_MAX_TOKENS, 0.0, 1.0,
                                   base + CLASSIFY_OFFSET + n, CLASSIFY_STOP) for n, (_, inst, _, _) in enumerate(tasks)]
    clf_replies = teacher.generate(clf_requests, desc=f"round {round_idx} self-instruct classify") if tasks else []
    rejected, pending = [], []
    for (head, inst, _, filters), req, reply in zip(tasks, clf_requests, clf_replies):
        head = {**head, "instruction": inst, "requests": {**head["requests"], "classify": teacher.key(req)},
                "provenance": {**head["provenance"], "classify_reply": reply.text}}
        if reply.error:
            rejected.append(rejected_row(head, "classify", teacher_failure(reply), reply.text,
                                         filters=filters + [{"filter": "classify", "kept": False, "reason": teacher_failure(reply)}]))
        else:
            pending.append((head, inst, is_classification_reply(reply.text), filters))

    ins_requests = [instance_request(inst, clf, sc, base + INSTANCE_OFFSET + n) for n, (_, inst, clf, _) in enumerate(pending)]
    ins_replies = teacher.generate(ins_requests, desc=f"round {round_idx} self-instruct instances") if pending else []
    kept = []
    for (head, inst, clf, filters), req, reply in zip(pending, ins_requests, ins_replies):
        label = "classification" if clf else "generation"
        head = {**head, "task": label, "requests": {**head["requests"], "instances": teacher.key(req)}}
        if reply.error:
            reason = teacher_failure(reply)
            rejected.append(rejected_row(head, "instances", reason, reply.text, filters=filters + [{"filter": "instances", "kept": False, "reason": reason}]))
            continue
        pairs = parse_instances(reply.text, clf)
        good, dropped = clean_instances(pairs, reply.finish_reason == "length", sc.max_instances, rng)
        summary = {"filter": "instances", "kept": bool(good), "reason": "" if good else ("no_valid_instances" if pairs else "no_instances_parsed"),
                   "parsed": len(pairs), "kept_instances": len(good), "dropped": count_reasons(r for _, r in dropped)}
        if not pairs:
            rejected.append(rejected_row(head, "instances", "no_instances_parsed", reply.text, filters=filters + [summary]))
        for (inp, out), reason in dropped:
            rejected.append(rejected_row(head, "instances", reason, reply.text, input=inp, output=out,
                                         filters=filters + [{**summary, "kept": False, "reason": reason}]))
        for inp, out in good:
            kept.append({**head, "id": f"r{round_idx}-{len(kept):05d}", "input": inp, "output": out, "context": "", "filters": filters + [summary]})
    return kept, rejected


def prompt_provenance(p: int, shown: list[tuple[str, str]]) -> dict:
    return {"prompt": p, "prompt_instructions": [t for t, _ in shown], "machine_in_prompt": [not sid for _, sid in shown],
            "seed_ids": [sid for _, sid in shown if sid]}


def count_reasons(reasons) -> dict[str, int]:
    return dict(Counter(reasons))


def check_seed_count(n_seeds: int, sc: SelfInstructConfig) -> None:
    if n_seeds < sc.num_prompt_instructions:
        which = "classification seed tasks" if sc.classification_seeds_only else "seed tasks"
        raise ValueError(f"self_instruct.num_prompt_instructions: a prompt shows up to {sc.num_prompt_instructions} seeds but only "
                         f"{n_seeds} {which} are loaded; lower it or add seed tasks (self_instruct.seed_tasks)")


# ---- the method contract (loop/methods.py) -------------------------------------------------------------------------

Config = SelfInstructConfig  # its section of the run config: generation.self_instruct
STEERED = False  # a faithful baseline: it samples seeds uniformly, as published; its task weights are only logged
STREAMS = False  # run_round returns its rows whole, at the end of its round


State = SeedState  # seeds, machine-written instructions, novelty pool (generation/data/seeds.py)


def start(g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list, load_embedder: Callable) -> State:
    # The reference's novelty pool is the seeds it shows: only classification ones under --use_clf_seed_tasks_only.
    return start_from_seeds(g.self_instruct.seed_tasks, g.self_instruct.seed_split, pool, NoveltyFilter(g.novelty.threshold, g.novelty.no_token_text),
                            load_embedder, shown=lambda s: s.is_classification or not g.self_instruct.classification_seeds_only,
                            hub=g.datasets.get(g.self_instruct.seed_tasks))


def run_round(teacher: Teacher, state: State, g: GenerationConfig, weights: dict[str, float], round_idx: int, seed: int,
              rng: random.Random, closed_book: bool = True) -> tuple[list[dict], list[dict], RoundStats]:
    return run_self_instruct_round(teacher, state.seeds, state.machine, state.novelty, g, round_idx, seed, rng, state.embedder)

