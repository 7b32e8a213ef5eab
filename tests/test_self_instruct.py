"""Self-Instruct: seed loading, parity with the reference code (tests/reference, verbatim copies), and one round
through the loopback OpenAI-protocol server with canned, prompt-derived replies."""
import json
import random
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import TEST_DATA
from generation.teacher.cache import Budget, CachedTeacher, TeacherCache
from generation.config import GenerationConfig, SelfInstructConfig
from generation.data.corpus import DataError
from generation.filters.novelty import NoveltyFilter
from generation.data.pool import PoolItem
from generation.data.seeds import SeedTask, load_seed_tasks, seeds_from_pool
from generation.methods.self_instruct import (CLASSIFY_MAX_TOKENS, CLASSIFY_STOP, PROMPT_STOP, classify_prompt, clean_instances,
                                      encode_prompt, heuristic_verdict, instance_prompt, instance_request,
                                      instruction_request, is_classification_reply, parse_instances,
                                      run_self_instruct_round, sample_prompt_instructions, split_reply)
from generation.teacher.backends import OpenAITeacher
from openai_server import FakeOpenAI

sys.path.insert(0, str(Path(__file__).parent / "reference"))
import si_bootstrap_instructions as ref_boot  # noqa: E402
import si_generate_instances as ref_inst  # noqa: E402
import si_identify_clf_or_not as ref_clf  # noqa: E402
import si_prepare_for_finetuning as ref_prep  # noqa: E402

SEED_FILE = TEST_DATA / "self_instruct_seed_tasks.jsonl"


@pytest.fixture(scope="module")
def seeds() -> list[SeedTask]:
    return load_seed_tasks(str(SEED_FILE))


# ---- seeds ------------------------------------------------------------------------------------------------------

def test_seed_tasks_load_in_every_format(seeds, tmp_path):
    raw = [json.loads(line) for line in SEED_FILE.read_text().splitlines()]
    assert len(seeds) == 175 and sum(s.is_classification for s in seeds) == 26
    assert [s.instruction for s in seeds] == [r["instruction"] for r in raw], "seed text kept as written (the reference uses it raw)"
    assert seeds[0].id == "seed_task_0" and seeds[0].name == "breakfast_suggestion" and seeds[0].instances == raw[0]["instances"]

    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text('{"task": "classification", "instruction": "Label the tone. ", "input": "Great!", "output": "positive"}\n'
                         '\n{"id": "q1", "task": "qa", "instruction": "What is 2+2?"}\n')
    pool = load_seed_tasks(str(pool_file))
    assert [(s.id, s.name, s.instruction, s.instances, s.is_classification) for s in pool] == [
        ("seed-1", "classification", "Label the tone.", [{"input": "Great!", "output": "positive"}], True),
        ("q1", "qa", "What is 2+2?", [{"input": "", "output": ""}], False)]

    import datasets
    datasets.Dataset.from_list(raw[:4]).save_to_disk(str(tmp_path / "ds"))
    assert [s.instruction for s in load_seed_tasks(str(tmp_path / "ds"), "train")] == [r["instruction"] for r in raw[:4]]

    items = [PoolItem("g1", "classification", "Classify it.", "x", "y", "general"), PoolItem("d1", "qa", "Why?", "", "Because.", "domain")]
    assert [(s.id, s.is_classification, s.instances) for s in seeds_from_pool(items)] == [
        ("g1", True, [{"input": "x", "output": "y"}]), ("d1", False, [{"input": "", "output": "Because."}])]


@pytest.mark.parametrize("line, message", [
    ('{"task": "qa"}', "row 1: needs a non-empty string 'instruction'"),
    ('{"instruction": "Do it.", "instances": []}', "'instances' must be a non-empty list"),
    ('{"instruction": "Do it.", "instances": [{"input": ""}]}', "'instances' must be a non-empty list"),
    ('{"instruction": "Do it.", "instances": [{"input": "", "output": "x"}], "is_classification": "yes"}', "'is_classification' must be true or false"),
    ('{"instruction": "Do it."}', "a pool-format row needs 'task'"),
    ('{"instruction": ', "pool.jsonl:1: not valid JSON"),
    ('{"id": "a", "task": "t", "instruction": "x"}\n{"id": "a", "task": "t", "instruction": "y"}', "duplicate seed task id 'a'"),
])
def test_bad_seed_rows_fail_with_the_row_and_the_fix(tmp_path, line, message):
    path = tmp_path / "pool.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        load_seed_tasks(str(path))


# ---- parity: prompts and sampling -------------------------------------------------------------------------------

@pytest.mark.parametrize("n_machine, classification", [(0, False), (1, False), (40, False), (40, True)])
def test_prompts_equal_the_reference_for_the_same_random_seed(seeds, n_machine, classification):
    """The reference samples with the global `random` (random.seed(42) at import); ours with a random.Random.
    Module-level random functions are bound methods of one hidden Random, so random.seed(s) + the reference's calls
    and random.Random(s) + ours draw the same items, and leave both generators in the same state."""
    shown_from = [s for s in seeds if s.is_classification] if classification else seeds
    machine = [f"Write a short poem about the number {i} and its meaning." for i in range(n_machine)]
    sc = SelfInstructConfig(classification_seeds_only=classification)
    args = SimpleNamespace(request_batch_size=sc.prompts_per_round, num_prompt_instructions=sc.num_prompt_instructions,
                           use_clf_seed_tasks_only=classification)
    for s in (0, 42, 1234):
        random.seed(s)
        expected = ref_boot.reference_prompt_batch(args, [t.instruction for t in shown_from], machine)
        rng = random.Random(s)
        plans = [sample_prompt_instructions(shown_from, machine, sc.num_prompt_instructions, sc.num_machine_instructions, rng)
                 for _ in range(sc.prompts_per_round)]
        assert [encode_prompt([t for t, _ in p], classification) for p in plans] == expected
        assert [instruction_request(p, sc, 0).messages[0][1] for p in plans] == expected
        assert random.random() == rng.random(), "same number of draws"
        for p in plans:  # which slots were machine-written, and the seed ids of the rest
            assert sum(not sid for _, sid in p) == min(2, n_machine)
            assert all((t in machine) == (not sid) for t, sid in p)
    assert expected[0].startswith("Come up with a series of classification tasks." if classification else "Come up with a series of tasks:\n1. ")
    assert expected[0].endswith("\n9.")


def test_request_parameters_equal_the_reference(seeds):
    sc = SelfInstructConfig()
    ref = ref_boot.reference_request_params()
    req = instruction_request([(s.instruction, s.id) for s in seeds[:8]], sc, 7)
    assert (req.max_tokens, req.temperature, req.top_p, req.presence_penalty, list(req.stop)) == (
        ref["max_tokens"], ref["temperature"], ref["top_p"], ref["presence_penalty"], ref["stop_sequences"])

    clf = ref_clf.reference_request_params()
    assert (CLASSIFY_MAX_TOKENS, list(CLASSIFY_STOP)) == (clf["max_tokens"], clf["stop_sequences"]) and clf["temperature"] == 0

    args = SimpleNamespace(max_instances_to_generate=5)
    for is_clf in (True, False):
        task = {"instruction": "Tell me if the review is positive."}
        ref = ref_inst.reference_request_params(args, [task], {task["instruction"]: is_clf})
        req = instance_request(task["instruction"], is_clf, sc, 0)
        assert (req.max_tokens, req.presence_penalty, list(req.stop)) == (ref["max_tokens"], ref["presence_penalty"], ref["stop_sequences"])
        # temperature 0 + top_p 0 there; greedy here too, with top_p 1.0 (vLLM rejects top_p=0)
        assert (ref["temperature"], ref["top_p"], req.temperature, req.top_p) == (0, 0, 0.0, 1.0)


# ---- parity: post-processing heuristics -------------------------------------------------------------------------

LONG = " ".join(["word"] * 149)
CRAFTED_REPLIES = [
    " Describe the image in the text.\n10. Describe the imagery in this poem please.\n11. Summarize the files below.",
    " Create a MAP of the city streets.\n12. Explain how mapping software works in practice.\n13. Go to the store and buy milk.",
    " Explain why goto statements are harmful.\n14. Draw a cat using text only.\n15. Plot the data below as a line.",
    " write a program that adds two numbers.\n10. Write a Program to sort a list.\n11. Write a python program to sort a list.",
    ' "Quote" the sentence back to me.\n10. (optional) explain the answer in detail.\n11. Écrivez une phrase en français.',
    " Three words only.\n10. Four words are here.\n11. " + LONG + " x\n12. " + LONG + " x y",  # 3, 4, 150, 151 words
    " Tell me the capital of France?   \n\n10 . Spaces   and\ttabs are   collapsed here.\n10.Not split here because no space.",
    " List the graph's nodes in order.\n10. Name the graphs' nodes in order.\n11. Describe a pictures frame carefully.\n12. Name the brand of a graphing calculator.",
    "",
]


@pytest.mark.parametrize("text", CRAFTED_REPLIES)
def test_heuristic_verdicts_equal_the_reference(text):
    response = {"choices": [{"text": text, "finish_reason": "stop"}]}
    ours = [inst for inst in split_reply(text) if heuristic_verdict(inst)["kept"]]
    assert ours == ref_boot.post_process_gpt3_response(response)
    assert ref_boot.post_process_gpt3_response({"choices": [{"text": text, "finish_reason": "length"}]}) == []


def test_heuristic_reasons_name_the_rule():
    reason = lambda t: heuristic_verdict(t)["reason"]  # noqa: E731
    assert [reason(t) for t in ("Three words only.", "Four words are here.", LONG + " x", LONG + " x y")] == ["too_short", "", "", "too_long"]
    assert heuristic_verdict("Describe the image in the text.") == {"filter": "heuristics", "kept": False, "reason": "blacklisted_word",
                                                                     "words": 6, "word": "image"}
    assert reason("Describe the imagery in this poem.") == "" and reason("Please go to the page now.") == "blacklisted_word"
    assert reason("Write a program to sort a list.") == "write_a_program"
    assert reason('"Quote" the sentence back to me.') == "starts_with_punctuation"
    assert reason("Écrivez une phrase en français.") == "starts_with_non_ascii"
    assert split_reply(" name the capital of NASA's home state.") == ["Name the capital of nasa's home state."], "str.capitalize, as the reference"


def test_a_chat_reply_that_restates_the_number_loses_it():
    """Our one addition: the reference would keep '9. write a haiku...' with its number; a completion never starts so."""
    chat = "9. Write a haiku about autumn leaves.\n10. Name three uses of copper wire."
    assert split_reply(chat) == ["Write a haiku about autumn leaves.", "Name three uses of copper wire."]
    assert ref_boot.post_process_gpt3_response({"choices": [{"text": chat, "finish_reason": "stop"}]})[0] == "9. write a haiku about autumn leaves."


# ---- parity: classification identification, instance prompts and clean-up -----------------------------------------

def test_classification_prompt_and_label_equal_the_reference():
    batch = [{"instruction": "  Tell me if the sentence is sarcastic. "}, {"instruction": "Write a story about a dog."}]
    assert [classify_prompt(d["instruction"]) for d in batch] == ref_clf.reference_prompts(SimpleNamespace(template="template_1"), batch)
    for reply in (" Yes", "Yes", "yes\n", " YES ", "No", " no", " Yes.", "Yes, it is", "", " Y"):
        assert is_classification_reply(reply) == ref_clf.reference_is_classification({"is_classification": reply}), reply


def test_instance_prompts_equal_the_reference():
    batch = [{"instruction": " Classify the sentiment of the tweet. "}, {"instruction": "Write a limerick about tea."}]
    types = {batch[0]["instruction"]: True, batch[1]["instruction"]: False}
    assert [instance_prompt(d["instruction"], types[d["instruction"]]) for d in batch] == ref_inst.reference_prompts(batch, types)


GEN_REPLIES = [
    "Example 1\nList: [3, 1, 2]\nOutput: [1, 2, 3]\nExample 2\nList: [9, 8]\nOutput: [8, 9]",
    "Output: Paris is the capital.",
    "Just an answer with no markers.",
    "Example 1\nInput: a b\nOutput: b a\nInput 2: c d\nOutput 2: d c",
    "Example 1\nSentence: Hi\nOutput: Hello\nExample 2\nSentence: Hi\nOutput: Hey",  # same input, two outputs: all dropped
    "Example 1\nSentence: Hi\nOutput: Hello\nExample 2\nSentence: Hi\nOutput: Hello\nExample 3\nSentence: Yo\nOutput: Hey",
    "Example 1\nWord: same\nOutput: Word: same\nExample 2\nWord: cat\nOutput:\nExample 3\nWord: dog\nOutput: Translation:",
    "Example 1\nInput: 2+2\nOutput: 4\nExample 2\nInput: 3+3\nOutput: 6\nExample 3\nInput: 4+4\nOutput: 8 and",
]
CLF_REPLIES = [
    "Class label: Positive\nReview: Loved it.\nClass label: Negative\nReview: Awful.\nClass label: Neutral",
    "No labels in this reply at all.",
    "Class label: Yes\nSentence: Jack ran.\nClass label: Yes\nSentence: Jack ran.\nClass label: No\nSentence: Jill sat.",
    "Class label: A\nQ: pick A\nClass label: B\nQ: pick A",
    "Class label: Spam\nEmail: Win money:\nClass label: Ham\nEmail: Lunch at 1?",
]


@pytest.mark.parametrize("classification, text", [(False, t) for t in GEN_REPLIES] + [(True, t) for t in CLF_REPLIES])
@pytest.mark.parametrize("finish", ["stop", "length"])
def test_instance_clean_up_equals_the_reference(classification, text, finish):
    instruction = "Do the task."
    metadata = {"response": {"choices": [{"finish_reason": finish}]}}
    parse = ref_prep.parse_instances_for_classification_task if classification else ref_prep.parse_instances_for_generation_task
    expected = parse(text, instruction, metadata)  # after filter_invalid_instances and filter_duplicate_instances
    pairs = parse_instances(text, classification)
    kept, dropped = clean_instances(pairs, finish == "length", 5, random.Random(0))
    # The reference's list(set(...)) order varies with string hashing, so compare as sets (none here exceeds 5).
    assert sorted((instruction, i, o) for i, o in kept) == sorted(expected)
    assert len(kept) + len(dropped) == len(pairs), "every parsed instance is kept or dropped with a reason"


def test_instance_clean_up_reasons_and_the_cap_of_five():
    pairs = parse_instances(GEN_REPLIES[6], False)
    assert [r for _, r in clean_instances(pairs, False, 5, random.Random(0))[1]] == ["input_equals_output", "empty_output", "ends_with_colon"]
    assert [r for _, r in clean_instances(parse_instances(GEN_REPLIES[4], False), False, 5, random.Random(0))[1]] == ["same_input_different_output"] * 2
    assert [r for _, r in clean_instances(parse_instances(GEN_REPLIES[0], False), True, 5, random.Random(0))[1]] == ["truncated_instance"]
    labels = "".join(f"Class label: L{i}\nText: t{i}\n" for i in range(8))
    pairs = parse_instances(labels, True)
    for s in (0, 1, 2):
        kept, dropped = clean_instances(pairs, False, 5, random.Random(s))
        random.seed(s)
        assert kept == ref_prep.reference_sample(list(pairs)), "the same draw as the reference's random.sample(..., 5)"
        assert len(kept) == 5 and [r for _, r in dropped] == ["over_max_instances"] * 3


# ---- one round through a real teacher ---------------------------------------------------------------------------

class CannedOpenAI(FakeOpenAI):
    """The loopback server, answering each Self-Instruct stage in the reference's formats (derived from the prompt)."""

    @staticmethod
    def reply_text(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Come up with a series of tasks:"):
            topic = re.findall(r"[a-z]{6,}", prompt.split("\n")[1].lower())[0]  # the first shown instruction's first long word
            return (f" Give three practical tips about {topic} for a beginner.\n10. Write a program that prints {topic}.\n"
                    "11. Describe the image of a sunset.\n12. Tell me if the movie review is positive or negative.\n"
                    "13. Tell me if the movie review is positive or negative.\n14. Hi there")
        if prompt.startswith("Can the following task be regarded"):
            return " Yes" if "Tell me if" in prompt.rsplit("Task:", 1)[1] else " No"
        if prompt.startswith("Given the classification task definition"):
            return ("Class label: Positive\nReview: I loved every minute.\nClass label: Negative\nReview: Dull and long.\n"
                    "Class label: Positive\nReview: I loved every minute.")
        if prompt.startswith("Come up with examples"):
            return "Example 1\nTopic: tea\nOutput: Brew it for three minutes.\nExample 2\nTopic: sleep\nOutput:"
        return "unexpected prompt"


def make_teacher(server, cache_path):
    return CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", max_concurrency=1, timeout_s=5.0, max_retries=1,
                                       backoff_s=0.01), TeacherCache(cache_path), Budget())


def run_round(server, cache_path, seeds, machine, round_idx, rng):
    teacher = make_teacher(server, cache_path)
    novelty = NoveltyFilter(0.7)
    novelty.add([s.instruction for s in seeds] + machine)
    cfg = GenerationConfig(method="self_instruct")
    return teacher, run_self_instruct_round(teacher, seeds, machine, novelty, cfg, round_idx, 3, rng)


KEPT_KEYS = {"id", "round", "method", "task", "instruction", "input", "output", "context", "teacher_model", "requests", "provenance", "filters"}


def test_one_round_through_the_openai_protocol(seeds, tmp_path):
    with CannedOpenAI(faults=["length"]) as server:  # the first instruction reply comes back cut by length
        machine: list[str] = []
        teacher, (kept, rejected, stats) = run_round(server, tmp_path / "c.sqlite", seeds, machine, 0, random.Random(11))
        first_body = server.requests[0]
        sent = len(server.requests)

        assert kept and all(set(r) == KEPT_KEYS for r in kept)
        assert [r["id"] for r in kept] == [f"r0-{i:05d}" for i in range(len(kept))]
        assert {r["task"] for r in kept} == {"classification", "generation"} and all(r["method"] == "self_instruct" for r in kept)
        clf = [r for r in kept if r["task"] == "classification"]
        assert {(r["input"], r["output"]) for r in clf} == {("Review: I loved every minute.", "Positive"), ("Review: Dull and long.", "Negative")}
        gen = [r for r in kept if r["task"] == "generation"]
        assert all((r["input"], r["output"]) == ("Topic: tea", "Brew it for three minutes.") for r in gen)
        for r in kept:
            assert set(r["requests"]) == {"instruction", "classify", "instances"} and all(re.fullmatch("[0-9a-f]{64}", k) for k in r["requests"].values())
            assert len(r["provenance"]["prompt_instructions"]) == 8 and not any(r["provenance"]["machine_in_prompt"])
            assert [f["filter"] for f in r["filters"]] == ["heuristics", "novelty", "instances"] and all(f["kept"] for f in r["filters"])
        # Four prompts answered in full: each gives 6 candidates; the truncated one gives none.
        assert stats.requests == 4 * 6 and machine == list(dict.fromkeys(r["instruction"] for r in kept))
        reasons = [r["reason"] for r in rejected]
        assert reasons.count("reply_truncated") == 1 and reasons.count("write_a_program") == 4
        assert reasons.count("blacklisted_word") == 4 and reasons.count("too_short") == 4
        # Kept: the first reply's "Give three practical tips ..." and "Tell me if ..."; the other 10 are too close to those.
        assert reasons.count("similar_to_pool") == 10 and len(machine) == 2
        assert reasons.count("duplicate") == 1 and reasons.count("empty_output") == len(gen)
        assert sum(stats.rejected.values()) == len(rejected)
        assert all({"id", "stage", "reason", "raw", "filters"} <= set(r) and r["raw"] and r["filters"] for r in rejected)
        assert {r["stage"] for r in rejected} == {"instruction", "novelty", "instances"}
        # What the teacher was sent: the reference's decoding parameters and stop sequences.
        assert (first_body["temperature"], first_body["top_p"], first_body["presence_penalty"], first_body["stop"]) == (0.7, 0.5, 2.0, list(PROMPT_STOP))

        # A rerun (same seed, fresh state, same cache file) sends nothing and gives the same rows.
        teacher2, (kept2, rejected2, _) = run_round(server, tmp_path / "c.sqlite", seeds, [], 0, random.Random(11))
        assert (kept2, rejected2) == (kept, rejected)
        assert len(server.requests) == sent and teacher2.ledger.calls == 0 and teacher2.ledger.cache_hits == teacher2.ledger.requests

        # The next round shows 2 machine-written instructions in every prompt.
        _, (_, rejected3, _) = run_round(server, tmp_path / "c.sqlite", seeds, machine, 1, random.Random(12))
        shown = [r["provenance"] for r in rejected3]
        assert shown and all(sum(p["machine_in_prompt"]) == 2 and len(p["seed_ids"]) == 6 for p in shown)
        assert all(t in machine for p in shown for t, m in zip(p["prompt_instructions"], p["machine_in_prompt"]) if m)
