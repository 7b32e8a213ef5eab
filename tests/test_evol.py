"""Evol-Instruct: the operators' prompts equal WizardLM's wording, the four elimination rules fire on crafted cases
and not on clean ones, and a round against a scripted loopback OpenAI server keeps, rejects and grows the pool
as the paper says (failed evolutions leave the parent in the pool; successes join it and evolve further)."""
import ast
import random
from collections import Counter

import pytest
from openai_server import FakeOpenAI

from generation.teacher.cache import Budget, CachedTeacher, TeacherCache
from generation.config import EVOL_OPERATORS, EvolConfig, GenerationConfig
from generation.methods.evol import (EvolvedItem, copied_prompt_words, equality_prompt, evolve_prompt, given_prompt, input_overlap,
                             is_refusal, judge_verdict, not_a_task, only_stop_words, run_evol_round, sorry_and_short)
from generation.data.pool import PoolItem
from generation.teacher.backends import OpenAITeacher

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


def test_screens_fire_on_crafted_cases_and_not_on_clean_ones():
    # evolved_refusal: a refusal at the start, or as most of the text; a user's own "I can't ..." is a task.
    assert is_refusal("I'm sorry, but I can't assist with that request.") and is_refusal("As an AI, I cannot help with that.")
    assert is_refusal("Rewrite it. I cannot fulfil this request because it asks for private data about real people.")
    assert is_refusal("Unfortunately, I cannot provide that.") and is_refusal("\u201cI\u2019m sorry, I can't.\u201d")
    assert not is_refusal("I can't get this loop to stop; why does it run forever?")
    assert not is_refusal("As an AI researcher, explain attention.") and not is_refusal("Name three colors.")
    # evolved_lost_input: the share of the parent data's distinct content words still there.
    parent = PoolItem("p", "t", "Translate the sentence into French.", "The quick brown fox jumps over the lazy dog.", "", "general")
    assert input_overlap(parent, "Translate into formal French: The quick brown fox jumps over the lazy dog.") == 1.0
    assert input_overlap(parent, "Translate a sentence about a fox into formal French.") == 1 / 6
    coded = PoolItem("p", "t", "Explain this code:\n```python\ndef area(radius):\n    return 3.14 * radius ** 2\n```", "", "", "general")
    assert input_overlap(coded, coded.instruction.replace("this code", "this code's output for radius 2")) == 1.0
    assert input_overlap(coded, "Explain how to compute the area of a circle.") == 1 / 8  # of python def area radius return 3 14 2
    quoted = PoolItem("p", "t", 'Translate "the quick brown fox" into French.', "", "", "general")
    assert input_overlap(quoted, "Translate a short English phrase into French.") == 0.0
    assert input_overlap(PoolItem("p", "t", "Name three colors.", "", "", "general"), "Name one.") is None  # nothing to carry
    # evolved_not_a_task: opens like an answer, or asks nothing.
    assert not_a_task("The three primary colors are red, yellow and blue. Mixing red and blue gives purple.")
    assert not_a_task("Sure, here is a harder version: name three colors.") and not_a_task("Certainly! Red, yellow and blue.")
    assert not_a_task("Here is the function:\n```python\ndef f(x):\n    return x\n```")  # code is not a request
    for task in ("In Python, write a function that sorts a list.", "Task: Summarize the passage.", "What are the primary colors",
                 "Given a list of integers, find the median.", "I have a table of sales. Please chart it.", "Sure-footed goats: how do they climb?"):
        assert not not_a_task(task), task


FOX = "The quick brown fox jumps over the lazy dog."


class ScriptedEvolServer(FakeOpenAI):
    """Replies by marker: a pool instruction carries [ok], [copy], [equal], [sorry] or [stop], and the evolved
    instruction keeps it, so each marker meets the elimination rule it names. The screens' markers: [refuse]
    evolves into a refusal, [answer] into an answer, [lost] drops the parent's input and [carry] keeps it."""
    MARKERS = ("[ok]", "[copy]", "[equal]", "[sorry]", "[stop]", "[refuse]", "[answer]", "[lost]", "[carry]")

    @classmethod
    def reply_text(cls, body):
        prompt = body["messages"][-1]["content"]
        marker = next((m for m in cls.MARKERS if m in prompt), "[ok]")
        if "Prompt Rewriter" in prompt or "Prompt Creator" in prompt:
            if marker == "[copy]":
                return f"#Rewritten Prompt#: {marker} name colors"
            if marker == "[refuse]":
                return "I'm sorry, but I can't assist with that request."
            if marker == "[answer]":
                return "The three primary colors are red, yellow and blue; mixed in pairs they give orange, green and purple."
            if marker == "[lost]":
                return f"Translate a sentence {marker} about animals into formal French, keeping its tense."
            if marker == "[carry]":
                return f"Translate the sentence {marker} into formal French, keeping its tense:\n{FOX}"
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
        assert [f["filter"] for f in row["filters"]] == ["evol_prompt_copy", "evol_screen", "evol_equal", "evol_sorry", "evol_stop_words"]
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


def judged(server):
    return [b["messages"][-1]["content"] for b in server.requests if "do you think they are equal" in b["messages"][-1]["content"]]


def test_screens_reject_before_the_judge_and_keep_the_parent(scripted):
    pool = {"colors": [PoolItem("c0", "colors", "Name three primary colors [refuse].", "", "", "general"),
                       PoolItem("c1", "colors", "Name three primary colors [answer].", "", "", "general"),
                       PoolItem("c2", "colors", "Translate the sentence [lost].", FOX, "", "general"),
                       PoolItem("c3", "colors", "Translate the sentence [carry].", FOX, "", "general")]}
    originals = list(pool["colors"])
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=24, operators=["deepen", "add_constraints"]))
    kept, rejected, stats = run_evol_round(teacher(scripted), pool, {"colors": 1.0}, cfg, 0, 1, random.Random(0))

    expected = {"[refuse]": "evolved_refusal", "[answer]": "evolved_not_a_task", "[lost]": "evolved_lost_input"}
    for row in rejected:
        marker = next(m for m in expected if m in row["provenance"]["parent_instruction"])
        assert row["reason"] == expected[marker] and row["stage"] == "evolve" and set(row["requests"]) == {"evolve"}
        assert row["raw"] and row["filters"][-1]["filter"] == "evol_screen" and not row["filters"][-1]["kept"]
    assert {r["reason"] for r in rejected} == set(expected.values()) and stats.rejected == Counter(r["reason"] for r in rejected)
    lost = [r for r in rejected if r["reason"] == "evolved_lost_input"]
    assert all(r["filters"][-1]["input_overlap"] < 0.5 for r in lost)
    assert kept and all("[carry]" in r["instruction"] and FOX in r["instruction"] for r in kept)
    assert all(r["filters"][1] == {"filter": "evol_screen", "kept": True, "reason": "", "input_overlap": 1.0} for r in kept)
    # No judge or answer call was paid for a screened evolution: the server saw 24 evolutions, then 2 calls per kept row.
    assert len(scripted.requests) == 24 + 2 * len(kept) and len(judged(scripted)) == len(kept)
    assert not any(m in j for j in judged(scripted) for m in expected)
    assert pool["colors"][:4] == originals and len(pool["colors"]) == 4 + len(kept)  # parents stay; successes join


def test_lost_input_is_not_checked_for_breadth(scripted):
    pool = {"t": [PoolItem("c2", "t", "Translate the sentence [lost].", FOX, "", "general")]}
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=3, operators=["breadth"]))
    kept, rejected, _ = run_evol_round(teacher(scripted), pool, {"t": 1.0}, cfg, 0, 1, random.Random(0))
    assert len(kept) == 3 and not rejected and all(r["filters"][1] == {"filter": "evol_screen", "kept": True, "reason": ""} for r in kept)


def test_without_screens_a_refusal_goes_to_the_judge_as_in_the_paper(scripted):
    pool = {"colors": [PoolItem("c0", "colors", "Name three primary colors [refuse].", "", "", "general")]}
    cfg = GenerationConfig(method="evol_instruct", evol=EvolConfig(items_per_round=3, screen_evolved=False))
    kept, rejected, _ = run_evol_round(teacher(scripted), pool, {"colors": 1.0}, cfg, 0, 1, random.Random(0))
    assert len(judged(scripted)) == 3 and len(scripted.requests) == 9  # evolve, judge, answer each
    assert not rejected and [r["instruction"] for r in kept] == ["I'm sorry, but I can't assist with that request."] * 3
    assert all([f["filter"] for f in r["filters"]] == ["evol_prompt_copy", "evol_equal", "evol_sorry", "evol_stop_words"] for r in kept)


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
            return "garbage"  # a reply that came back unusable (a dropped connection is retried, never a row)
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
    from loop.config import build

    with pytest.raises(ValueError, match=r"top_p: must be in \(0, 1\], got 0"):
        build(EvolConfig, {"top_p": 0.0})
