"""DAIG's grounding gates, parsing and chunk coverage: unit checks on real text, and whole rounds against the
loopback OpenAI-protocol server with scripted replies (requests counted at the server)."""
import random

import pytest

from generation.config import DaigConfig, GenerationConfig, GroundingConfig
from generation.data.corpus import Chunk
from generation.methods.daig import answer_messages, check_answer, check_instruction, directive, parse_task, plan_requests, run_daig_round
from generation.filters.rules import followed_task, instruction_problem
from generation.filters.grounding import (DECLINE, answer_support, defers_to_passage, example_names, instruction_grounding, is_decline,
                                  judge_verdict, refers_to_passage, yes_no_mismatch)
from generation.data.pool import PoolItem, build_pool, load_pool
from generation.teacher.backends import OpenAITeacher, TeacherReply
from openai_server import FakeOpenAI

AUTH = Chunk("docs/auth.md#3", "docs/auth.md", "Pass `auth=BasicAuth(user, password)` to `Client`. The token is refreshed "
             "every 300 seconds by `refresh_token()`; set `token_ttl` to change it.", heading="Advanced > Authentication")
EXAMPLE = PoolItem("gen-qa-1", "question_answering", "Who built the first printing press in Europe?",
                   "Johannes Gutenberg built his press in Mainz around 1440.", "Around 1440.", "general")


def test_lexical_gate_rejects_another_topic_and_keeps_the_chunks():
    off = "When was Gutenberg's printing press invented and who used it first?"
    on = "How often does refresh_token() refresh the token, and which setting changes it?"
    assert instruction_grounding(off, AUTH.text) < 0.2
    assert instruction_grounding(on, AUTH.text) >= 0.6
    cfg = GenerationConfig(domain_path="x")
    reason, _, _, d = check_instruction(off, "", "question_answering", [EXAMPLE], AUTH, cfg, closed_book=True)
    assert reason == "ungrounded_instruction" and d["grounding"] < 0.2
    reason, _, _, d = check_instruction(on, "", "question_answering", [EXAMPLE], AUTH, cfg, closed_book=True)
    assert reason == "" and d["kept"]
    # Generic text has no topic of its own: it is about whatever passage comes with it.
    assert instruction_grounding("Summarize the passage.", AUTH.text) == 1.0


def test_copy_filter_compares_with_everything_the_prompt_showed():
    """A pasted example input scored 0.29 against the example's instruction alone; against the input it is a copy."""
    pasted = "Johannes Gutenberg built his press in Mainz around 1440. When?"
    d = directive("question_answering")
    reason, score, _ = instruction_problem(pasted, [EXAMPLE.instruction], d, 3, 150, 0.7)
    assert reason == "" and score < 0.5
    reason, score, _ = instruction_problem(pasted, [EXAMPLE.instruction, EXAMPLE.input, EXAMPLE.output], d, 3, 150, 0.7)
    assert reason == "copy_of_example" and score > 0.85
    # The same through the DAIG check, with examples shown whole, and a copy hidden in the parsed input.
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_shown="whole"))
    reason, *_ = check_instruction("Explain when this happened.", EXAMPLE.input, "question_answering", [EXAMPLE], AUTH, cfg, True)
    assert reason == "copy_of_example"


def test_dangling_reference_gets_the_chunk_as_input_or_is_rejected():
    ins = "Summarize the passage in two sentences."
    assert refers_to_passage(ins) and refers_to_passage("What does this API return?")
    assert not refers_to_passage("What does refresh_token() return?")
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(task_mismatch="keep"))
    reason, _, inp, d = check_instruction(ins, "", "summarization", [], AUTH, cfg, closed_book=True)
    assert reason == "" and inp == AUTH.text and d["input_from"] == "chunk"
    reason, _, inp, _ = check_instruction(ins, "", "summarization", [], AUTH, cfg, closed_book=False)
    assert reason == "" and inp == ""  # open book: the student sees the chunk anyway
    strict = GenerationConfig(domain_path="x", daig=DaigConfig(dangling_reference="reject"))
    assert check_instruction(ins, "", "summarization", [], AUTH, strict, closed_book=True)[0] == "dangling_reference"


# A chunk with a worked example, as documentation pages have them (pydantic's forward annotations page).
EXAMPLE_CODE = Chunk("docs/fwd.md#0", "docs/fwd.md", "Forward annotations are supported:\n\n```python\nfrom pydantic import BaseModel\n\n"
                     "MyInt = int\n\n\nclass Model(BaseModel):\n    a: MyInt\n\n\nprint(Model(a='1'))\n#> a=1\n```", heading="Forward Annotations")


def test_names_of_a_worked_example_and_unnamed_things_get_the_chunk_as_input():
    """'What is the `MyInt` type?' and 'What is the name of the YAML file?' mean nothing without the chunk."""
    assert example_names("What is the `MyInt` type, and what does `Model` print?", EXAMPLE_CODE.text) == ["MyInt", "Model"]
    assert example_names("Which `BaseModel` subclass validates the data?", EXAMPLE_CODE.text) == []  # imported, not defined here
    assert example_names("How are forward annotations resolved for a model?", EXAMPLE_CODE.text) == []  # plain words never count
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(task_mismatch="keep"))
    reason, _, inp, d = check_instruction("What is the `MyInt` type?", "", "question_answering", [], EXAMPLE_CODE, cfg, True)
    assert reason == "" and inp == EXAMPLE_CODE.text and d["example_names"] == ["MyInt"]
    assert refers_to_passage("What is the name of the YAML file?") and refers_to_passage("Summarize the factory function.")
    assert refers_to_passage("What is the purpose of `ET.parse` in the given Python script?")
    assert refers_to_passage("Summarize the following Python 3.10 and 3.12 code snippets in one sentence.")
    assert not refers_to_passage("What does the `rebuild` method do?") and not refers_to_passage("What is the purpose of `TypeAdapter`?")


def test_answers_that_defer_to_the_passage_or_say_it_lacks_the_answer_are_rejected():
    cfg = GenerationConfig(domain_path="x")
    ok = TeacherReply("", "stop")
    for answer, reason in [("The types it can handle are specified in the passage.", "answer_defers"),
                           ("To configure it, follow the steps outlined in the dedicated section of the passage.", "answer_defers"),
                           ("The `token_ttl` option is not mentioned in the `auth` documentation.", "declined"),
                           (DECLINE, "declined"),
                           ("The token is refreshed every 300 seconds by `refresh_token()`.", "")]:
        assert check_answer(answer, ok, "How often is the token refreshed?", "", AUTH, cfg)[0] == reason, answer
    assert not defers_to_passage("The factory function in the passage makes every field optional.")
    # The decline rule is a system message and the task comes last: with the rule as the last line, the 1.5B
    # teacher declined answerable tasks (LOG.md).
    (role, system), (_, user) = answer_messages("How often is the token refreshed?", AUTH)
    assert role == "system" and DECLINE in system and user.rstrip().endswith("How often is the token refreshed?")


@pytest.mark.parametrize("raw,instruction,inp", [
    ("**Classification task**: Classify `token_ttl` as a setting or a method.", "Classify `token_ttl` as a setting or a method.", ""),
    ("### Instruction: Explain what refresh_token() does.", "Explain what refresh_token() does.", ""),
    ("**Explanation of refresh_token()**: Explain what refresh_token() does.", "Explain what refresh_token() does.", ""),
    ("Explanation of Logfire's functionality**: Explain what Logfire records.", "Explain what Logfire records.", ""),
    ("**Explanation of Logfire:** Explain what Logfire records.", "Explain what Logfire records.", ""),
    ("Instruction: Rewrite this sentence for beginners.\nInput: The token is refreshed every 300 seconds.",
     "Rewrite this sentence for beginners.", "The token is refreshed every 300 seconds."),
    ("Explain what this code does:\n```python\nclient = Client(auth=BasicAuth('a', 'b'))\n```",
     "Explain what this code does:", "```python\nclient = Client(auth=BasicAuth('a', 'b'))\n```"),
    ("Task: What does token_ttl set?\nInput: none", "What does token_ttl set?", ""),
])
def test_parse_task_strips_labels_and_moves_inline_inputs(raw, instruction, inp):
    assert parse_task(raw) == (instruction, inp)


def test_answer_support_declines_and_judge_verdicts():
    source = AUTH.text
    support, missing = answer_support("The token is refreshed every 300 seconds by refresh_token().", source)
    assert support == 1.0 and missing == []
    support, missing = answer_support("Gutenberg invented it in 1760 in Mainz, Germany.", source)
    assert support < 0.3 and missing == ["1760"]
    assert is_decline("NOT IN PASSAGE") and is_decline("The passage does not mention the default port.")
    assert not is_decline("Set token_ttl; the passage says it defaults to 300 seconds.")
    assert [judge_verdict(t) for t in ("Yes.", "no, it cannot", "**Yes**", "Maybe")] == ["yes", "no", "yes", ""]


def test_answers_that_do_not_do_the_task_are_rejected():
    """'Classify the usage errors in the passage.' -> 'Yes', and answers that say the task back (1.5B teacher, LOG.md)."""
    cfg = GenerationConfig(domain_path="x")
    ok = TeacherReply("", "stop")
    assert yes_no_mismatch("Classify the usage errors of refresh_token().", "Yes")
    assert yes_no_mismatch("Can you explain what `token_ttl` does?", "Yes, it sets the refresh period.")
    assert not yes_no_mismatch("Is `token_ttl` in seconds?", "Yes.") and not yes_no_mismatch("What is it?", "Nothing.")
    for question, answer in [("According to the passage, is `token_ttl` in seconds?", "Yes, in seconds."),
                             ("Determine if refresh_token() is thread-safe.", "No, it is not."),
                             ("What is the default token_ttl?", "No default is set.")]:  # a yes/no question, or not a bare no
        assert not yes_no_mismatch(question, answer), question
    assert check_answer("Yes", ok, "Classify token_ttl as a setting or a method.", "", AUTH, cfg)[0] == "answer_not_task"
    said_back = "Which setting changes how often refresh_token() refreshes the token?"
    assert check_answer(said_back, ok, said_back, "", AUTH, cfg)[0] == "answer_not_task"
    assert check_answer("Set `token_ttl`.", ok, said_back, "", AUTH, cfg)[0] == ""


def test_classification_task_must_name_its_classes():
    """'Classify the recommended practice in the passage.' names no classes; the 1.5B answered such tasks with a
    made-up label ('Reuse', 'Positive')."""
    cfg = GenerationConfig(domain_path="x")
    for text, reason in [("Classify the refresh setting of refresh_token().", "classes_not_named"),
                         ("Classify `token_ttl` as a setting or a method of the refresh_token() client.", ""),
                         ("Classify whether refresh_token() refreshes the token every 300 seconds.", ""),
                         ("Classify `token_ttl` and `auth` into client and token options.", ""),
                         ("Classify each refresh_token() option as one of: token_ttl, auth, client.", "")]:
        assert check_instruction(text, "", "classification", [EXAMPLE], AUTH, cfg, True)[0] == reason, text


def test_task_followed_is_checked_by_cue_words():
    assert followed_task("Summarize how tokens are refreshed.", "classification") == "summarization"
    assert followed_task("Classify token_ttl as a setting or a method.", "classification") == "classification"
    assert followed_task("How often is the token refreshed?", "explanation") == "explanation"  # QA/explanation: never relabelled
    cfg = GenerationConfig(domain_path="x")
    _, task, _, d = check_instruction("Summarize how refresh_token() refreshes the token.", "", "classification", [], AUTH, cfg, True,
                                      ("classification", "summarization"))
    assert task == "summarization" and d["relabelled_from"] == "classification"
    reject = GenerationConfig(domain_path="x", daig=DaigConfig(task_mismatch="reject"))
    assert check_instruction("Summarize how refresh_token() works.", "", "classification", [], AUTH, reject, True)[0] == "task_mismatch"


class ScriptedDocsServer(FakeOpenAI):
    """Instruction requests get the next scripted instruction; answer requests the scripted answer for that
    instruction; judge requests 'no' when the task mentions Gutenberg or the answer says 1760, else 'yes'."""
    INSTRUCTIONS = ["When was Gutenberg's printing press invented?",  # topic from a shown example
                    "How often does refresh_token() refresh the token?",
                    "Which password does BasicAuth use by default for the Client?",  # about the chunk, but not in it: declined
                    "Which setting changes how often the token is refreshed?"]
    ANSWERS = {"How often": "Every 300 seconds.", "password": "NOT IN PASSAGE",
               "Which setting": "Set token_ttl; refresh_token() refreshes the token every 300 seconds, or 1760 times."}

    def reply_text(self, body):
        prompt = body["messages"][-1]["content"]
        if "Reply yes or no" in prompt:
            return "No" if "Gutenberg" in prompt or "1760" in prompt else "Yes"
        if "Write one new" in prompt:
            return "Task: " + self.INSTRUCTIONS[int(body["seed"]) % len(self.INSTRUCTIONS)]
        task = prompt.split('"""')[2]  # what follows the passage: the instruction
        return next((a for k, a in self.ANSWERS.items() if k in task), "Every 300 seconds.")


def _round(server, **overrides):
    cfg = GenerationConfig(domain_path="x", grounding=GroundingConfig(**overrides), daig=DaigConfig(examples_per_round=4))
    plan = [("question_answering", [EXAMPLE], AUTH)] * 4
    teacher = OpenAITeacher("fake-teacher", server.base_url, "", 2, 10, 0)
    return run_daig_round(teacher, plan, cfg, round_idx=1, seed=0)


def test_round_rejects_off_topic_declined_and_invented_rows_with_reasons():
    with ScriptedDocsServer() as server:
        kept, rejected, stats = _round(server)
        sent = len(server.requests)
    assert [r["instruction"] for r in kept] == ["How often does refresh_token() refresh the token?"]
    assert {r["reason"] for r in rejected} == {"ungrounded_instruction", "declined", "answer_unsupported_number"}
    off = next(r for r in rejected if r["reason"] == "ungrounded_instruction")
    assert off["stage"] == "instruction" and off["filters"][0]["grounding"] < 0.2
    number = next(r for r in rejected if r["reason"] == "answer_unsupported_number")
    assert number["filters"][-1]["unsupported_numbers"] == ["1760"]
    assert sent == 4 + 3  # the off-topic instruction cost no answer call
    assert kept[0]["provenance"]["heading"] == "Advanced > Authentication" and kept[0]["filters"][-1]["support"] == 1.0


def test_judges_are_teacher_calls_counted_at_the_server():
    with ScriptedDocsServer() as server:
        kept, rejected, _ = _round(server, min_instruction_grounding=0.0, reject_unsupported_numbers=False, judge="both")
        prompts = [b["messages"][-1]["content"] for b in server.requests]
    judges = [p for p in prompts if "Reply yes or no" in p]
    # 4 instructions -> instruction judge on all 4 (the lexical gate is off) -> 3 answers -> answer judge on 2 (one declined).
    assert len(prompts) == 4 + 4 + 3 + 2 and len(judges) == 6
    reasons = {r["reason"] for r in rejected}
    assert reasons == {"judge_ungrounded", "declined", "judge_unsupported"}
    assert [r["instruction"] for r in kept] == ["How often does refresh_token() refresh the token?"]
    assert [f["filter"] for f in kept[0]["filters"]] == ["instruction", "instruction_judge", "answer", "answer_judge"]


def test_cut_off_instruction_is_rejected():
    with FakeOpenAI(faults=["length"]) as server:
        cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=1))
        kept, rejected, _ = run_daig_round(OpenAITeacher("fake-teacher", server.base_url, "", 1, 10, 0),
                                           [("question_answering", [EXAMPLE], AUTH)], cfg, 1, 0)
        assert len(server.requests) == 1  # no answer was paid for half an instruction
    assert not kept and rejected[0]["reason"] == "instruction_truncated"


def test_stratified_sampling_spreads_requests_over_documents_then_chunks():
    pool = build_pool(load_pool("builtin", "general"), [], [])
    weights = {t: 1 / len(pool) for t in pool}
    # One big document (12 chunks) and two small ones: uniform sampling would give the big one 80% of requests.
    chunks = [Chunk(f"big.md#{i}", "big.md", f"text {i}") for i in range(12)] + [Chunk("a.md#0", "a.md", "a"), Chunk("b.md#0", "b.md", "b"),
                                                                              Chunk("b.md#1", "b.md", "b1")]
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=9))
    picked = [c for _, _, c in plan_requests(weights, pool, chunks, cfg, random.Random(0))]
    assert [sum(c.source == d for c in picked) for d in ("big.md", "a.md", "b.md")] == [3, 3, 3]
    assert len({c.id for c in picked if c.source == "big.md"}) == 3 and {c.id for c in picked if c.source == "b.md"} == {"b.md#0", "b.md#1"}
    # Across rounds: the counts of earlier requests make the next round start with chunks not asked about yet.
    earlier = {c.id: 1 for c in picked}
    again = [c for _, _, c in plan_requests(weights, pool, chunks, cfg, random.Random(1), requested=earlier)]
    assert not {c.id for c in again if c.source == "big.md"} & {c.id for c in picked if c.source == "big.md"}


def test_code_heavy_chunks_are_skipped_or_downweighted():
    pool = build_pool(load_pool("builtin", "general"), [], [])
    weights = {t: 1 / len(pool) for t in pool}
    chunks = [Chunk("d.md#0", "d.md", "prose"), Chunk("d.md#1", "d.md", "```\nlog\n```", code_share=1.0)]
    skip = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=50, code_chunks="skip", chunk_sampling="uniform"))
    assert {c.id for _, _, c in plan_requests(weights, pool, chunks, skip, random.Random(0))} == {"d.md#0"}
    down = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=400, chunk_sampling="uniform"))
    share = sum(c.id == "d.md#1" for _, _, c in plan_requests(weights, pool, chunks, down, random.Random(0))) / 400
    assert 0.12 < share < 0.28  # weight 0.25 against 1: a fifth


def test_grounding_config_is_validated():
    from loop.config import build

    with pytest.raises(ValueError) as e:
        build(GenerationConfig, {"domain_path": "x", "grounding": {"judge": "always", "min_answer_support": 1.5},
                                 "daig": {"examples_shown": "outputs"}})
    assert sorted(p.split(":")[0] for p in e.value.problems) == ["daig.examples_shown", "grounding.judge", "grounding.min_answer_support"]
