"""Evol-Instruct: the operators' prompts equal WizardLM's wording, the four elimination rules fire on crafted cases
and not on clean ones, and a round against a scripted loopback OpenAI server keeps, rejects and grows the pool
as the paper says (failed evolutions leave the parent in the pool; successes join it and evolve further)."""
import ast
import random

import pytest
from openai_server import FakeOpenAI

from generation.cache import Budget, CachedTeacher, TeacherCache
from generation.config import EVOL_OPERATORS, EvolConfig, GenerationConfig
from generation.evol import (EvolvedItem, copied_prompt_words, equality_prompt, evolve_prompt, given_prompt, judge_verdict,
                             only_stop_words, run_evol_round, sorry_and_short)
from generation.pool import PoolItem
from generation.teachers import OpenAITeacher

# nlpxucan/WizardLM Evol_Instruct/depth.py `base_instruction`, line by line as the source file lays it out: each line
# ends in a backslash continuation and the next starts with five tabs, which stay in the string.
DEPTH_SOURCE_LINES = [
    r"I want you act as a Prompt Rewriter.\r\n ",
    r"Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems (e.g., chatgpt and GPT4) a bit harder to handle.\r\n ",
    r"But the rewritten prompt must be reasonable and must be understood and responded by humans.\r\n ",
    r"Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#:. Also, please do not omit the input in #The Given Prompt#. \r\n ",
    r"You SHOULD complicate the given prompt using the following method: \r\n",
    r"{} \r\n",
    r"You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 to 20 words into #The Given Prompt#. \r\n",
    r"'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in #Rewritten Prompt#\r\n",
]
DEPTH_BASE = ast.literal_eval('"' + "\\\n\t\t\t\t\t".join(DEPTH_SOURCE_LINES) + '"')
DEPTH_ARGS = {  # the argument each create*Prompt function passes to base_instruction.format
    "add_constraints": "Please add one more constraints/requirements into #The Given Prompt#'",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "increase_reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it to explicitly request multiple-step reasoning.",
}
# Evol_Instruct/breadth.py `base_instruction` (unindented continuation lines).
BREADTH_SOURCE_LINES = [
    r"I want you act as a Prompt Creator.\r\n",
    r"Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.\r\n",
    r"This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.\r\n",
    r"The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.\r\n",
    r"The #Created Prompt# must be reasonable and must be understood and responded by humans.\r\n",
    r"'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear in #Created Prompt#\r\n",
]
BREADTH_BASE = ast.literal_eval('"' + "\\\n".join(BREADTH_SOURCE_LINES) + '"')
INSTRUCTION = "Name three primary colors.\r\n"  # main.py: instruction + '\r\n' + input (empty here)


@pytest.mark.parametrize("operator", list(DEPTH_ARGS))
def test_depth_prompts_equal_the_reference(operator):
    expected = DEPTH_BASE.format(DEPTH_ARGS[operator]) + "#The Given Prompt#: \r\n {} \r\n".format(INSTRUCTION) + "#Rewritten Prompt#:\r\n"
    assert evolve_prompt(operator, INSTRUCTION) == expected
    assert "\r\n \t\t\t\t\tYour objective" in expected  # the indentation tabs really are in the reference prompt


def test_breadth_prompt_equals_the_reference():
    expected = BREADTH_BASE + "#Given Prompt#: \r\n {} \r\n".format(INSTRUCTION) + "#Created Prompt#:\r\n"
    assert evolve_prompt("breadth", INSTRUCTION) == expected


def test_complicate_input_prompt_is_the_papers_with_the_format_and_instruction():
    header = ("I want you act as a Prompt Rewriter. Your objective is to rewrite a given prompt into a more complex version using "
              "dataformat to make those famous AI systems (e.g., chatgpt and GPT4) more difficult to handle. But the rewritten "
              "prompt must be reasonable and must be understood and responded by humans.\n")
    demo = (header + "You must add [python code] format text as input data in [Rewritten Prompt]\nThe Given Prompt:\nTransformat python code\n"
            "Rewritten Prompt(MUST contain a specific python code as input):\nI have the following Python code:\n"
            "cursor . execute (\" INSERT INTO table VALUES var1 , var2 , var3 ,\")\nwhere var1 is an integer, var2 and var3 are strings.\n"
            "How can I write the variable names without Python including them as part of the query text?\n####\n")
    query = (header + "You must add [XML data] format text as input data in [Rewritten Prompt]\nThe Given Prompt:\n" + INSTRUCTION + "\n"
             "Rewritten Prompt(MUST contain a specific XML data as input):\n")
    assert evolve_prompt("complicate_input", INSTRUCTION, "XML data") == demo + query


def test_every_configured_operator_has_a_prompt_and_the_input_joins_with_crlf():
    item = PoolItem("p1", "qa", "Translate the sentence.", "Hello there.", "", "general")
    assert given_prompt(item) == "Translate the sentence.\r\nHello there."
    for op in EVOL_OPERATORS:
        assert given_prompt(item) in evolve_prompt(op, given_prompt(item), "JSON data")


def test_equality_prompt_is_the_papers():
    assert equality_prompt("A?", "B?") == (
        "Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:\n"
        "1. They have same constraints and requirments.\n2. They have same depth and breadth of the inquiry.\n"
        "The First Prompt: A?\nThe Second Prompt: B?\nYour Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):")


def test_elimination_rules_fire_on_crafted_cases_and_not_on_clean_ones():
    # Rule 1: only an explicit "Equal" eliminates.
    assert judge_verdict("Equal") == "equal" and judge_verdict("The two prompts are equal.") == "equal"
    assert judge_verdict("Not Equal") == "not_equal" and judge_verdict("not  equal.") == "not_equal"
    assert judge_verdict("I cannot tell.") == "unclear" and judge_verdict("Unequal") == "unclear"
    # Rule 2: "sorry" and under 80 words.
    assert sorry_and_short("I'm sorry, but I cannot help with that request.")
    assert not sorry_and_short("Sorry " + "word " * 80)  # 81 words: long enough to be a real answer
    assert not sorry_and_short("Red, yellow and blue are the three primary colors.")
    # Rule 3: only punctuation and stop words.
    assert only_stop_words("It is what it is.") and only_stop_words("...!?") and only_stop_words("")
    assert only_stop_words("I don't, you won't; they shouldn't.")
    assert not only_stop_words("It is blue.") and not only_stop_words("It is 42.")
    # Rule 4: copies words of the evolving prompt.
    assert copied_prompt_words("#Rewritten Prompt#:\r\nName three colors.") == "rewritten prompt"
    assert copied_prompt_words("Rewrite the given prompt so it rhymes.") == "given prompt"
    assert copied_prompt_words("#Created Prompt#: list rare gems") == "created prompt"
    assert copied_prompt_words("Name three primary colors and explain how they mix into green, in under 50 words.") == ""


class ScriptedEvolServer(FakeOpenAI):
    """Replies by marker: a pool instruction carries [ok], [copy], [equal], [sorry] or [stop], and the evolved
    instruction keeps it, so each marker meets the elimination rule it names."""

    @staticmethod
    def reply_text(body):
        prompt = body["messages"][-1]["content"]
        marker = next((m for m in ("[ok]", "[copy]", "[equal]", "[sorry]", "[stop]") if m in prompt), "[ok]")
        if "Prompt Rewriter" in prompt or "Prompt Creator" in prompt:
            if marker == "[copy]":
                return f"#Rewritten Prompt#: {marker} name colors"
            return f"Name three colors {marker} and explain how each pair of them mixes."
        if "do you think they are equal" in prompt:
            return "Equal" if marker == "[equal]" else "Not Equal"
        if marker == "[sorry]":
            return "Sorry, I cannot do that."
        if marker == "[stop]":
            return "It is what it is."
        return "Red, yellow and blue; red and yellow make orange, yellow and blue make green."


@pytest.fixture
def scripted():
    with ScriptedEvolServer() as server:
        yield server


def teacher(server, cache=None):
    return CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", max_concurrency=4, timeout_s=5.0, max_retries=2,
                                       backoff_s=0.01), cache, Budget())


def make_pool():
    markers = ["[ok]", "[copy]", "[equal]", "[sorry]", "[stop]"]
    return {"colors": [PoolItem(f"c{i}", "colors", f"Name three primary colors {m}.", "", "", "general") for i, m in enumerate(markers)],
            "math": [PoolItem("m0", "math", "Add two and two [ok].", "", "", "domain")]}


def test_round_keeps_rejects_and_grows_the_pool(scripted):
    pool = make_pool()
    originals = {task: list(items) for task, items in pool.items()}
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=30))
    kept, rejected, stats = run_evol_round(teacher(scripted), pool, {"colors": 0.8, "math": 0.2}, cfg, 1, 7, random.Random(0))

    assert stats.requests == 30 and len(kept) + len(rejected) == 30 and sum(stats.rejected.values()) == len(rejected)
    expected = {"[copy]": "copies_evolution_prompt", "[equal]": "no_information_gain", "[sorry]": "answer_sorry_short",
                "[stop]": "answer_only_stop_words"}
    for row in rejected:
        marker = next(m for m in expected if m in row["provenance"]["parent_instruction"])
        assert row["reason"] == expected[marker] and row["raw"] and row["filters"][-1]["reason"] == row["reason"]
        assert not row["filters"][-1]["kept"] and all(f["kept"] for f in row["filters"][:-1])
    assert {r["reason"] for r in rejected} == set(expected.values())
    assert kept and all("[ok]" in r["provenance"]["parent_instruction"] for r in kept)
    ops = set()
    for row in kept:
        assert row["method"] == "evol_instruct" and row["id"].startswith("r1-") and row["input"] == "" and row["context"] == ""
        assert row["task"] == next(i.task for items in originals.values() for i in items if i.id == row["provenance"]["parent_id"])
        assert set(row["requests"]) == {"evolve", "equality", "answer"} and row["provenance"]["depth"] == 1
        assert [f["filter"] for f in row["filters"]] == ["evol_prompt_copy", "evol_equal", "evol_sorry", "evol_stop_words"]
        assert all(f["kept"] for f in row["filters"]) and row["output"].startswith("Red, yellow")
        ops.add(row["provenance"]["operator"])
    assert len(ops) > 1  # operators are drawn, not fixed
    # Failed parents are still there; each success joined the pool under its task, as an evolved item with the row id.
    for task, items in pool.items():
        assert items[:len(originals[task])] == originals[task]
        added = items[len(originals[task]):]
        assert [a.id for a in added] == [r["id"] for r in kept if r["task"] == task]
        assert all(isinstance(a, EvolvedItem) and a.kind == "evolved" and a.depth == 1 for a in added)
    # Requests: one evolution each; a judgement unless rule 4 failed; an answer only after "Not Equal".
    n_copy = sum(r["reason"] == "copies_evolution_prompt" for r in rejected)
    n_equal = sum(r["reason"] == "no_information_gain" for r in rejected)
    assert len(scripted.requests) == 30 + (30 - n_copy) + (30 - n_copy - n_equal)
    judge = [b for b in scripted.requests if "do you think they are equal" in b["messages"][-1]["content"]]
    assert judge and all(b["temperature"] == 0.0 and b["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
                         for b in judge)


def test_evolved_items_evolve_further_with_depth(scripted):
    pool = make_pool()
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=12, operators=["deepen", "breadth"]))
    kept1, _, _ = run_evol_round(teacher(scripted), pool, {"colors": 1.0, "math": 1.0}, cfg, 0, 3, random.Random(1))
    evolved_only = {t: [i for i in items if isinstance(i, EvolvedItem)] for t, items in pool.items()}
    evolved_only = {t: items for t, items in evolved_only.items() if items}
    kept2, _, _ = run_evol_round(teacher(scripted), evolved_only, {t: 1.0 for t in evolved_only}, cfg, 1, 3, random.Random(1))
    assert kept1 and kept2
    parents = {r["id"]: r for r in kept1}
    for row in kept2:
        assert row["provenance"]["depth"] == 2 and row["provenance"]["parent_id"] in parents
        assert row["provenance"]["parent_instruction"] == parents[row["provenance"]["parent_id"]]["instruction"] + "\r\n"
    assert sorted(i.depth for items in evolved_only.values() for i in items if i.id.startswith("r1-")) == [2] * len(kept2)


def test_rerun_hits_the_cache_and_gives_the_same_rows(scripted, tmp_path):
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=10))
    first = run_evol_round(teacher(scripted, TeacherCache(tmp_path / "c.sqlite")), make_pool(), {"colors": 1.0, "math": 1.0}, cfg, 2, 5, random.Random(3))
    sent = len(scripted.requests)
    second_teacher = teacher(scripted, TeacherCache(tmp_path / "c.sqlite"))
    second = run_evol_round(second_teacher, make_pool(), {"colors": 1.0, "math": 1.0}, cfg, 2, 5, random.Random(3))
    assert len(scripted.requests) == sent and second_teacher.ledger.calls == 0
    assert first[0] == second[0] and first[1] == second[1]
    seeds = [b["seed"] for b in scripted.requests]
    assert len(set(seeds)) == len(seeds)  # every request of the round has its own seed


def test_teacher_failures_are_rejected_rows_with_the_reason(scripted):
    scripted.faults = ["401"]  # the first evolution request fails for good (401 is not retried)
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=3))
    t = CachedTeacher(OpenAITeacher("fake-teacher", scripted.base_url, "", max_concurrency=1, timeout_s=5.0, max_retries=0), None, Budget())
    pool = {"math": [PoolItem("m0", "math", "Add two and two [ok].", "", "", "domain")]}
    kept, rejected, stats = run_evol_round(t, pool, {"math": 1.0}, cfg, 0, 1, random.Random(0))
    assert [r["reason"] for r in rejected] == ["teacher_http_401"] and rejected[0]["stage"] == "evolve"
    assert len(kept) == 2 and stats.rejected == {"teacher_http_401": 1} and len(pool["math"]) == 3


def test_judge_and_answer_failures_are_rejected_at_their_stage(scripted):
    """A reply that fails at the equality or answer stage rejects its row there (key recorded), in row order."""
    dropped = {}

    def drop_first_of_each_stage(number, body):
        text = body["messages"][-1]["content"]  # one request at a time: the 12 evolutions come first
        stage = "evolve" if number <= 12 else "equality" if "are two Instructions" in text else "answer"
        if stage != "evolve" and "[equal]" not in text and stage not in dropped:
            dropped[stage] = text
            return True
        return False

    scripted.before_reply = drop_first_of_each_stage
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=12))
    t = CachedTeacher(OpenAITeacher("fake-teacher", scripted.base_url, "", max_concurrency=1, timeout_s=5.0, max_retries=0), None, Budget())
    pool = {"colors": [PoolItem("c0", "colors", "Name three primary colors [ok].", "", "", "general"),
                       PoolItem("c1", "colors", "Name three primary colors [equal].", "", "", "general")]}
    kept, rejected, stats = run_evol_round(t, pool, {"colors": 1.0}, cfg, 0, 1, random.Random(0))
    failed = [r for r in rejected if r["reason"].startswith("teacher_")]
    assert sorted(r["stage"] for r in failed) == ["answer", "equality"] and set(dropped) == {"answer", "equality"}
    assert all(r["stage"] in r["requests"] for r in failed)  # the failed request's key is on the row
    judged = [r for r in rejected if r["stage"] == "equality"]
    assert len(judged) >= 2 and [r["id"] for r in judged] == sorted(r["id"] for r in judged)  # row order kept
    assert len(kept) + len(rejected) == 12 and stats.rejected.get("no_information_gain", 0) >= 1


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="operators"):
        EvolConfig(operators=["mutate"])
    with pytest.raises(ValueError, match="input_formats"):
        EvolConfig(input_formats=[])
    EvolConfig(operators=["deepen"], input_formats=[])  # no complicate_input: no formats needed
    with pytest.raises(ValueError, match="top_p"):
        EvolConfig(top_p=0)
