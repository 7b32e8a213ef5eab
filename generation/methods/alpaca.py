"""Stanford Alpaca's variant of Self-Instruct, faithful to tatsu-lab/stanford_alpaca (Apache-2.0) generate_instruction.py.

One round is one of the reference's batches: prompts_per_round prompts, each prompt.txt followed by 3 seed tasks
(drawn from the seeds only, never machine-written ones) as '###'-separated numbered Instruction / Input / Output
blocks; the teacher writes tasks 4..20 in the same format, so a reply carries instruction, input and output at
once. post_process_gpt3_response's rules decide what is kept, then the novelty filter.

Decoding as the reference: temperature 1.0, top_p 1.0, max_tokens 3072, stop ["\\n20", "20.", "20."]. Not sent:
its logit_bias {"50256": -100}, which bans GPT-3's <|endoftext|> token id so a completion model keeps writing until
task 20; that id means another token (or nothing) in other tokenizers, our teacher layer sends no logit_bias, and a
chat model ends its turn with its own end token, so it may simply write fewer tasks. Nor its retry with 80% of
max_tokens on 'Please reduce your prompt' errors: such a reply fails with its error and is recorded as rejected.
"""
from __future__ import annotations

import random
import re
from typing import Callable

from generation.config import AlpacaConfig, GenerationConfig
from generation.rows import RoundStats, new_row, rejected_row, request_seed, teacher_failure
from generation.filters.batch import filter_batch
from generation.filters.heuristics import BLACKLIST, heuristic_verdict
from generation.data.pool import PoolItem
from generation.data.seeds import SeedState, SeedTask, start_from_seeds
from generation.filters.novelty import NoveltyFilter
from generation.methods.templates import render
from generation.teacher.backends import Teacher, TeacherRequest

METHOD = "alpaca"
TASK_LABEL = "alpaca"
STOP = ("\n20", "20.", "20.")  # verbatim, the repeated "20." included
ALPACA_BLACKLIST = BLACKLIST + ("video", "audio", "music", "flowchart", "diagram")

# The prompt, prompt.txt verbatim and the shown seed tasks, is generation/methods/templates/alpaca/prompt.jinja
# (generation.alpaca.templates names your own).


def seed_example(seed: SeedTask) -> dict:
    """The reference shows each seed's first instance."""
    return {"instruction": seed.instruction, "input": seed.instances[0]["input"], "output": seed.instances[0]["output"]}


def encode_prompt(examples: list[dict], templates: dict | None = None) -> str:
    """generate_instruction.encode_prompt: prompt.txt, the examples as numbered blocks, then the next number."""
    shown = [{"instruction": re.sub(r"\s+", " ", ex["instruction"]).strip().rstrip(":"),
              "input": "<noinput>" if ex["input"].lower() == "" else ex["input"], "output": ex["output"]} for ex in examples]
    return render("alpaca", "prompt", templates, examples=shown)


def parse_reply(text: str, num_shown: int, finish_reason: str) -> list[tuple[str, dict | None, str]]:
    """(raw block, {"instruction", "input", "output"} or None, reason) per block, by post_process_gpt3_response.

    reason is '' for a parsed block; else 'truncated' (the last block of a reply cut by length) or 'unparseable'
    (not exactly one numbered Instruction/Input/Output triple). Blank blocks (what follows a final '###') are no
    candidates and are left out. Heuristics are not applied here (see heuristic_verdict).
    One addition for chat teachers: a reply that restates the prompt's last line ('4. Instruction:') loses it, as a
    completion would not have repeated it.
    """
    head = f"{num_shown + 1}. Instruction:"
    if text.lstrip().startswith(head):
        text = text.lstrip()[len(head):]
    blocks = re.split("###", head + text)
    out = []
    for idx, block in enumerate(blocks):
        if not block.strip():
            continue
        if idx == len(blocks) - 1 and finish_reason == "length":  # "the last example is likely truncated"
            out.append((block, None, "truncated"))
            continue
        parts = re.split(rf"{idx + num_shown + 1}\.\s+(Instruction|Input|Output):", block)
        if len(parts) != 7:
            out.append((block, None, "unparseable"))
            continue
        inp = parts[4].strip()
        out.append((block, {"instruction": parts[2].strip(), "input": "" if inp.lower() == "<noinput>" else inp,
                            "output": parts[6].strip()}, ""))
    return out


def run_alpaca_round(teacher: Teacher, seeds: list[SeedTask], machine: list[str], novelty, cfg: GenerationConfig,
                     round_idx: int, seed: int, rng: random.Random,
                     embedder=None) -> tuple[list[dict], list[dict], RoundStats]:
    """One Alpaca batch: kept rows (one per kept task), rejected rows, stats (requests = blocks parsed from replies).

    `machine` gets every kept instruction: it is never shown (Alpaca samples seeds only), but the novelty pool
    holds it, as the reference's does.
    """
    ac = cfg.alpaca
    if len(seeds) < ac.num_prompt_instructions:
        raise ValueError(f"alpaca.num_prompt_instructions: a prompt shows {ac.num_prompt_instructions} seed tasks but only "
                         f"{len(seeds)} are loaded; lower it or add seed tasks (alpaca.seed_tasks)")
    base = request_seed(seed, round_idx)
    stats = RoundStats()
    plans = [rng.sample(seeds, ac.num_prompt_instructions) for _ in range(ac.prompts_per_round)]
    requests = [alpaca_request(shown, ac, base + i) for i, shown in enumerate(plans)]
    replies = teacher.generate(requests, desc=f"round {round_idx} alpaca")

    rejected, candidates = [], []
    for p, (shown, req, reply) in enumerate(zip(plans, requests, replies)):
        head = new_row("", round_idx, METHOD, TASK_LABEL, teacher.model, {"instruction": teacher.key(req)},
                       {"prompt": p, "prompt_instructions": [s.instruction for s in shown], "seed_ids": [s.id for s in shown]})
        if reply.error:
            reason = teacher_failure(reply)
            rejected.append(rejected_row(head, "instruction", reason, reply.text, filters=[{"filter": "reply", "kept": False, "reason": reason}]))
            continue
        for block, item, reason in parse_reply(reply.text, ac.num_prompt_instructions, reply.finish_reason):
            stats.requests += 1
            if reason:
                rejected.append(rejected_row(head, "instruction", reason, block, filters=[{"filter": "parse", "kept": False, "reason": reason}]))
                continue
            verdict = heuristic_verdict(item["instruction"], ALPACA_BLACKLIST)
            if verdict["kept"]:
                candidates.append((head, item, block, verdict))
            else:
                rejected.append(rejected_row(head, "instruction", verdict["reason"], block, **item, filters=[verdict]))

    kept = []
    decisions = filter_batch([c[1]["instruction"] for c in candidates], novelty, cfg.novelty, embedder) if candidates else []
    for (head, item, block, verdict), decision in zip(candidates, decisions):
        if decision["kept"]:
            machine.append(item["instruction"])
            kept.append({**head, "id": f"r{round_idx}-{len(kept):05d}", **item, "context": "", "filters": [verdict, decision]})
        else:
            rejected.append(rejected_row(head, "novelty", decision["reason"], block, **item, filters=[verdict, decision]))
    for j, row in enumerate(rejected):
        row["id"] = f"r{round_idx}-x{j:05d}"
        stats.reject(row["reason"])
    return kept, rejected, stats


def alpaca_request(shown: list[SeedTask], ac: AlpacaConfig, seed: int) -> TeacherRequest:
    prompt = encode_prompt([seed_example(s) for s in shown], ac.templates)
    return TeacherRequest((("user", prompt),), ac.max_tokens, ac.temperature, ac.top_p, seed, STOP)


# ---- the method contract (loop/methods.py) -------------------------------------------------------------------------

Config = AlpacaConfig  # its section of the run config: generation.alpaca
STEERED = False  # a faithful baseline: it samples seeds uniformly, as published; its task weights are only logged
STREAMS = False  # run_round returns its rows whole, at the end of its round


State = SeedState  # seeds, machine-written instructions, novelty pool (generation/data/seeds.py)


def start(g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list, load_embedder: Callable) -> State:
    return start_from_seeds(g.alpaca.seed_tasks, g.alpaca.seed_split, pool, NoveltyFilter(g.novelty.threshold, g.novelty.no_token_text),
                            load_embedder, hub=g.datasets.get(g.alpaca.seed_tasks))


def run_round(teacher: Teacher, state: State, g: GenerationConfig, weights: dict[str, float], round_idx: int, seed: int,
              rng: random.Random, closed_book: bool = True) -> tuple[list[dict], list[dict], RoundStats]:
    return run_alpaca_round(teacher, state.seeds, state.machine, state.novelty, g, round_idx, seed, rng, state.embedder)
