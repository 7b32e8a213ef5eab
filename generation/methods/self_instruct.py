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

# The three few-shot templates (long, verbatim) are at the end of this file.


# ---- 1. prompts -------------------------------------------------------------------------------------------------

def encode_prompt(instructions: list[str], classification: bool = False) -> str:
    """bootstrap_instructions.encode_prompt: a numbered list the teacher continues at the next number."""
    if classification:
        prompt = "Come up with a series of classification tasks. Try to specify the possible output labels when possible.\n"
    else:
        prompt = "Come up with a series of tasks:\n"
    for idx, instruction in enumerate(instructions):
        instruction = re.sub(r"\s+", " ", instruction).strip().rstrip(":")
        prompt += f"{idx + 1}. {instruction}\n"
    return prompt + f"{len(instructions) + 1}."


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
    prompt = encode_prompt([text for text, _ in shown], sc.classification_seeds_only)
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

def classify_prompt(instruction: str) -> str:
    return CLASSIFY_TEMPLATE + " " + instruction.strip() + "\n" + "Is it classification?"


def is_classification_reply(text: str) -> bool:
    """Exactly the reference's test: a chat reply 'Yes.' counts as No there, and here."""
    return text.strip() in CLASSIFY_YES


# ---- 5. instances -----------------------------------------------------------------------------------------------

def instance_prompt(instruction: str, classification: bool) -> str:
    template = OUTPUT_FIRST_TEMPLATE_FOR_CLF if classification else INPUT_FIRST_TEMPLATE_FOR_GEN
    return template + " " + instruction.strip() + "\n"


def instance_request(instruction: str, classification: bool, sc: SelfInstructConfig, seed: int) -> TeacherRequest:
    # The reference sends 300 max tokens for a batch of 5 with any classification task, else 350 ("the clf template
    # is longer"); we apply that per request, so a request's tokens do not depend on its neighbours.
    max_tokens = sc.clf_instance_max_tokens if classification else sc.gen_instance_max_tokens
    stop = (f"Example {sc.max_instances + 1}", "Task:")
    return TeacherRequest((("user", instance_prompt(instruction, classification)),), max_tokens, 0.0, 1.0, seed, stop,
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
    clf_requests = [TeacherRequest((("user", classify_prompt(inst)),), CLASSIFY_MAX_TOKENS, 0.0, 1.0,
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


# ---- templates ---------------------------------------------------------------------------------------------------

# Verbatim from yizhongw/self-instruct self_instruct/templates/clf_task_template.py (template_1).


# ---- the method contract (loop/methods.py) -------------------------------------------------------------------------

Config = SelfInstructConfig  # its section of the run config: generation.self_instruct
STEERED = False  # a faithful baseline: it samples seeds uniformly, as published; its task weights are only logged


State = SeedState  # seeds, machine-written instructions, novelty pool (generation/data/seeds.py)


def start(g: GenerationConfig, pool: dict[str, list[PoolItem]], chunks: list, load_embedder: Callable) -> State:
    # The reference's novelty pool is the seeds it shows: only classification ones under --use_clf_seed_tasks_only.
    return start_from_seeds(g.self_instruct.seed_tasks, g.self_instruct.seed_split, pool, NoveltyFilter(g.novelty.threshold, g.novelty.no_token_text),
                            load_embedder, shown=lambda s: s.is_classification or not g.self_instruct.classification_seeds_only,
                            hub=g.datasets.get(g.self_instruct.seed_tasks))


def run_round(teacher: Teacher, state: State, g: GenerationConfig, weights: dict[str, float], round_idx: int, seed: int,
              rng: random.Random, closed_book: bool = True) -> tuple[list[dict], list[dict], RoundStats]:
    return run_self_instruct_round(teacher, state.seeds, state.machine, state.novelty, g, round_idx, seed, rng, state.embedder)


CLASSIFY_TEMPLATE = '''Can the following task be regarded as a classification task with finite output labels?

Task: Given my personality and the job, tell me if I would be suitable.
Is it classification? Yes

Task: Give me an example of a time when you had to use your sense of humor.
Is it classification? No

Task: Replace the placeholders in the given text with appropriate named entities.
Is it classification? No

Task: Fact checking - tell me if the statement is true, false, or unknown, based on your knowledge and common sense.
Is it classification? Yes

Task: Return the SSN number for the person.
Is it classification? No

Task: Detect if the Reddit thread contains hate speech.
Is it classification? Yes

Task: Analyze the sentences below to identify biases.
Is it classification? No

Task: Select the longest sentence in terms of the number of words in the paragraph, output the sentence index.
Is it classification? Yes

Task: Find out the toxic word or phrase in the sentence.
Is it classification? No

Task: Rank these countries by their population.
Is it classification? No

Task: You are provided with a news article, and you need to identify all the categories that this article belongs to. Possible categories include: Music, Sports, Politics, Tech, Finance, Basketball, Soccer, Tennis, Entertainment, Digital Game, World News. Output its categories one by one, seperated by comma.
Is it classification? Yes

Task: Given the name of an exercise, explain how to do it.
Is it classification? No

Task: Select the oldest person from the list.
Is it classification? Yes

Task: Find the four smallest perfect numbers.
Is it classification? No

Task: Does the information in the document supports the claim? You can answer "Support" or "Unsupport".
Is it classification? Yes

Task: Create a detailed budget for the given hypothetical trip.
Is it classification? No

Task: Given a sentence, detect if there is any potential stereotype in it. If so, you should explain the stereotype. Else, output no.
Is it classification? No

Task: Explain the following idiom to me, and try to give me some examples.
Is it classification? No

Task: Is there anything I can eat for a breakfast that doesn't include eggs, yet includes protein, and has roughly 700-1000 calories?
Is it classification? No

Task: Answer the following multiple choice question. Select A, B, C, or D for the final answer.
Is it classification? Yes

Task: Decide whether the syllogism is logically sound.
Is it classification? Yes

Task: How can individuals and organizations reduce unconscious bias?
Is it classification? No

Task: What are some things you can do to de-stress?
Is it classification? No

Task: Find out the largest one from a set of numbers. Output the number directly.
Is it classification? Yes

Task: Replace the <mask> token in the text with proper words that are consistent with the context. You can use multiple words for each <mask> token.
Is it classification? No

Task: Write a cover letter based on the given facts.
Is it classification? No

Task: Identify the pos tag of the word in the given sentence.
Is it classification? Yes

Task: Write a program to compute the sum of integers from k to n.
Is it classification? No

Task: In this task, you need to compare the meaning of the two sentences and tell if they are the same. Output yes or no.
Is it classification? Yes

Task: To make the pairs have the same analogy, write the fourth word.
Is it classification? No

Task: Given a set of numbers, find all possible subsets that sum to a given number.
Is it classification? No

Task:'''

# Verbatim from yizhongw/self-instruct self_instruct/templates/instance_gen_template.py.
OUTPUT_FIRST_TEMPLATE_FOR_CLF = '''Given the classification task definition and the class labels, generate an input that corresponds to each of the class labels. If the task doesn't require input, just generate possible class labels.

Task: Classify the sentiment of the sentence into positive, negative, or mixed.
Class label: mixed
Sentence: I enjoy the flavor of the restaurant but their service is too slow.
Class label: Positive
Sentence: I had a great day today. The weather was beautiful and I spent time with friends and family.
Class label: Negative
Sentence: I was really disappointed by the latest superhero movie. I would not recommend it to anyone.

Task: Given a dialogue, classify whether the user is satisfied with the service. You should respond with "Satisfied" or "Unsatisfied".
Class label: Satisfied
Dialogue:
- Agent: Thank you for your feedback. We will work to improve our service in the future.
- Customer: I am happy with the service you provided. Thank you for your help.
Class label: Unsatisfied
Dialogue:
- Agent: I am sorry we will cancel that order for you, and you will get a refund within 7 business days.
- Customer: oh that takes too long. I want you to take quicker action on this.

Task: Given some political opinions, classify whether the person belongs to Democrats or Republicans.
Class label: Democrats
Opinion: I believe that everyone should have access to quality healthcare regardless of their income level.
Class label: Republicans
Opinion: I believe that people should be able to keep more of their hard-earned money and should not be taxed at high rates.

Task: Tell me if the following email is a promotion email or not.
Class label: Promotion
Email: Check out our amazing new sale! We've got discounts on all of your favorite products.
Class label: Not Promotion
Email: We hope you are doing well. Let us know if you need any help.

Task: Detect if the Reddit thread contains hate speech.
Class label: Hate Speech
Thread: All people of color are stupid and should not be allowed to vote.
Class label: Not Hate Speech
Thread: The best way to cook a steak on the grill.

Task:  Does the information in the document supports the claim? You can answer "Support" or "Unsupport".
Class label: Unsupport
Document: After a record-breaking run that saw mortgage rates plunge to all-time lows and home prices soar to new highs, the U.S. housing market finally is slowing. While demand and price gains are cooling, any correction is likely to be a modest one, housing economists and analysts say. No one expects price drops on the scale of the declines experienced during the Great Recession.
Claim: The US housing market is going to crash soon.
Class label: Support
Document: The U.S. housing market is showing signs of strain, with home sales and prices slowing in many areas. Mortgage rates have risen sharply in recent months, and the number of homes for sale is increasing. This could be the beginning of a larger downturn, with some economists predicting a potential housing crash in the near future.
Claim: The US housing market is going to crash soon.

Task: Answer the following multiple-choice question. Select A, B, C, or D for the final answer.
Class label: C
Question: What is the capital of Germany?
A. London
B. Paris
C. Berlin
D. Rome
Class label: D
Question: What is the largest planet in our solar system?
A) Earth
B) Saturn
C) Mars
D) Jupiter
Class label: A
Question: What is the process by which plants make their own food through photosynthesis?
A) Respiration
B) Fermentation
C) Digestion
D) Metabolism
Class label: B
Question: Who wrote the novel "The Great Gatsby"?
A) Ernest Hemingway
B) F. Scott Fitzgerald
C) J.D. Salinger
D) Mark Twain

Task: You need to read a code and detect if there is a syntax error or not. Output true if there is an error, output false if there is not.
Class label: true
Code:
def quick_sort(arr):
    if len(arr) < 2
        return arr
Class label: False
Code:
def calculate_average(numbers):
    total = 0
    for number in numbers:
        total += number
    return total / len(numbers)

Task: You are provided with a news article, and you need to identify all the categories that this article belongs to. Possible categories include Sports and Politics. Output its categories one by one, separated by a comma.
Class label: Sports
Article: The Golden State Warriors have won the NBA championship for the second year in a row.
Class label: Politics
Article: The United States has withdrawn from the Paris Climate Agreement.
Class label: Politics, Sports
Article: The government has proposed cutting funding for youth sports programs.

Task: Given a credit card statement, the cardholder's spending habits, and the account balance, classify whether the cardholder is at risk of defaulting on their payments or not.
Class label: At risk
Credit card statement: Purchases at high-end clothing stores and luxury hotels.
Cardholder's spending habits: Frequent purchases at luxury brands and high-end establishments.
Account balance: Over the credit limit and multiple missed payments.
Class label: Not at risk
Credit card statement: Purchases at grocery stores and gas stations.
Cardholder's spending habits: Regular purchases for necessary expenses and occasional dining out.
Account balance: Slightly below the credit limit and no missed payments.

Task: Given a social media post, the hashtags used, and a topic. classify whether the post is relevant to the topic or not.
Class label: Relevant
Post: I can't believe the government is still not taking action on climate change. It's time for us to take matters into our own hands.
Hashtags: #climatechange #actnow
Topic: Climate change
Class label: Not relevant 
Post: I just bought the new iPhone and it is amazing!
Hashtags: #apple #technology
Topic: Travel

Task: The answer will be 'yes' if the provided sentence contains an explicit mention that answers the given question. Otherwise, answer 'no'. 
Class label: Yes
Sentence: Jack played basketball for an hour after school.
Question: How long did Jack play basketball?
Class label: No
Sentence: The leaders of the Department of Homeland Security now appear before 88 committees and subcommittees of Congress.
Question: How often are they required to appear?

Task: Tell me what's the second largest city by population in Canada.
Class label: Montreal

Task: Classifying different types of mathematical equations, such as linear, and quadratic equations, based on the coefficients and terms in the equation.
Class label: Linear equation
Equation: y = 2x + 5
Class label: Quadratic equation
Equation: y = x^2 - 4x + 3

Task: Tell me the first number of the given list.
Class label: 1
List: 1, 2, 3
Class label: 2
List: 2, 9, 10

Task: Which of the following is not an input type? (a) number (b) date (c) phone number (d) email address (e) all of these are valid inputs.
Class label: (e)

Task:'''

INPUT_FIRST_TEMPLATE_FOR_GEN = '''Come up with examples for the following tasks. Try to generate multiple examples when possible. If the task doesn't require additional input, you can generate the output directly.

Task: Which exercises are best for reducing belly fat at home?
Output:
- Lying Leg Raises
- Leg In And Out
- Plank
- Side Plank
- Sit-ups

Task: Extract all the country names in the paragraph, list them separated by commas.
Example 1
Paragraph: Dr. No is the sixth novel by the English author Ian Fleming to feature his British Secret Service agent James Bond. Written at Fleming's Goldeneye estate in Jamaica, it was first published in the United Kingdom by Jonathan Cape in 1958. In the novel Bond looks into the disappearance in Jamaica of two fellow MI6 operatives who had been investigating Doctor No. Bond travels to No's Caribbean island and meets Honeychile Rider, who is there to collect shells. They are captured and taken to a luxurious facility carved into a mountain. The character of Doctor No, the son of a German missionary and a Chinese woman, was influenced by Sax Rohmer's Fu Manchu stories. Dr. No was the first of Fleming's novels to face widespread negative reviews in Britain, but it was received more favourably in the United States.
Output: English, British, Jamaica, the United Kingdom, German, Chinese, Britain, the United States.

Task: Converting 85 F to Celsius.
Output: 85°F = 29.44°C

Task: Sort the given list ascendingly. 
Example 1
List: [10, 92, 2, 5, -4, 92, 5, 101]
Output: [-4, 2, 5, 5, 10, 92, 92, 101]
Example 2
Input 2 - List: [9.99, 10, -5, -1000, 5e6, 999]
Output: [-1000, -5, 9.99, 10, 999, 5e6]

Task: Suggest a better and more professional rephrasing of the following sentence.
Example 1
Sentence: This house is surprisingly not constructed very well, and you probably need more money to fix it after you buy it. If you ask me, I would suggest you to consider other candidates.
Output: This house does not seem to be constructed well, so you may need to spend more money to fix it after you purchase it. I would suggest that you look at other properties.
Example 2
Sentence: Just so you know, we did an experiment last week and found really surprising results - language model can improve itself!
Output: Our experiments last week demonstrated surprising results, proving that the language model can improve itself.

Task: Read the following paragraph and answer a math question about the paragraph. You need to write out the calculation for getting the final answer.
Example 1
Paragraph: Gun violence in the United States results in tens of thousands of deaths and injuries annually, and was the leading cause of death for children 19 and younger in 2020. In 2018, the most recent year for which data are available as of 2021, the Centers for Disease Control and Prevention's (CDC) National Center for Health Statistics reports 38,390 deaths by firearm, of which 24,432 were by suicide. The rate of firearm deaths per 100,000 people rose from 10.3 per 100,000 in 1999 to 12 per 100,000 in 2017, with 109 people dying per day or about 14,542 homicides in total, being 11.9 per 100,000 in 2018. In 2010, there were 19,392 firearm-related suicides, and 11,078 firearm-related homicides in the U.S. In 2010, 358 murders were reported involving a rifle while 6,009 were reported involving a handgun; another 1,939 were reported with an unspecified type of firearm. In 2011, a total of 478,400 fatal and nonfatal violent crimes were committed with a firearm.
Question: How many more firearm-related deaths were there in 2018 compared to 2010?
Output:
38390 - (19392 + 11078) = 38390 - 30470 = 7920. 
So, in 2018, there were 7920 more deaths by firearm than in 2010.

Task: Write Python code to solve this leetcode problem.
Example 1
Problem: You are given two non-empty linked lists representing two non-negative integers. The digits are stored in reverse order, and each of their nodes contains a single digit. Add the two numbers and return the sum as a linked list. You may assume the two numbers do not contain any leading zero, except the number 0 itself.
Output:
class Solution(object):
    def addTwoNumbers(self, l1, l2):
        carry = 0
        root = n = ListNode(0)
        while l1 or l2 or carry:
            v1 = v2 = 0
            if l1:
                v1 = l1.val
                l1 = l1.next
            if l2:
                v2 = l2.val
                l2 = l2.next
            carry, val = divmod(v1+v2+carry, 10)
            n.next = ListNode(val)
            n = n.next
        return root.next

Task: Solve the equation and find the value of X. Show your steps.
Example 1
Equation: 10X + 5 = 10
Output: 10X = 5,  X = 0.5
Example 2
Equation: X + Y + 120 = 100
Output: X + Y = -20, X = -20 - Y

Task: Write a program to compute the sum of integers from k to n.
Output:
def sum(k, n):
    sum = 0
    for i in range(k, n+1):
        sum += i
    return sum

Task: Select the oldest person from the given list.
Example 1
List: George Washington, Confucius, Michael Jordan, Michelangelo
Output: Confucious
Example 2
List: Alan Turing, Geoffrey Hinton, Yann LeCun, Yoshua Bengio
Output: Alan Turing

Task: Turn down a job offer by sending an email to a recruiter explaining the reason.
Output: Hi  [Recruiter],
Thank you so much for the generous offer to join your team. As we discussed, I’ve admired the company for a number of years, and am a proud endorser of its products. However, after further consideration of where I currently am in my career, I’ve decided to accept an offer at another company.
I would love to stay in touch with you and have already started following you on [Social Media Platform]. Again, thank you so much for your time and consideration.
Thanks again,
[Your Name]

Task:'''
