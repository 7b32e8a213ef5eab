"""Dynosaur-style metadata tasks: the prompt is the reference's, invalid proposals are dropped with the reference's
reasons (plus duplicates across replies and rounds), instances are the dataset's own rows formatted as
organize_data.py does, and metadata loads from a `datasets` folder or a .jsonl with a description."""
import random

import datasets
import pytest
from conftest import REPO
from openai_server import FakeOpenAI

from generation.teacher.cache import Budget, CachedTeacher, TeacherCache
from generation.config import DynosaurConfig, GenerationConfig
from generation.data.corpus import DataError
from generation.methods.dynosaur import (DatasetMeta, complete_dicts, format_input, label_space, load_dataset_meta, parse_tasks,
                                 run_dynosaur_round, salvage_tasks, task_prompt, truncate)
from generation.teacher.backends import OpenAITeacher

CATEGORIES = ["billing", "hardware", "network"]
ROWS = [{"ticket_id": f"T{i:03d}", "message": f"Customer {i} reports problem number {i}.", "category": CATEGORIES[i % 3],
         "action": "" if i % 5 == 0 else f"Do step {i}.", "notes": "", "tags": ["a", "b"]} for i in range(30)]
META = DatasetMeta("tickets", "Support tickets with the customer's message, a category and the action taken.",
                   ["ticket_id", "message", "category", "action", "notes", "tags"], ROWS)
# Dynosaur's demonstration tasks (generate_tasks_with_description.py), verbatim.
SQUAD_TASKS = ("{'task1': {'instruction': 'Please answer the question based on the Wikipedia article. The answer to every question is a "
               "segment of text, or span, from the corresponding reading passage, or the question might be unanswerable.', "
               "'input_fields': ['title', 'context', 'question'], 'output_field': ['answers']}, 'task2': {'instruction': 'Create a "
               "question provided the article.', 'input_fields': ['context'], 'output_field': ['question']}, 'task3': {'instruction': "
               "'Can you write a title for the passage?', 'input_fields': ['context'], 'output_field': ['title']}}")
ANLI_TASKS = ("{'task1': {'instruction': 'Natural language inference (NLI) is the task of determining whether a hypothesis is "
              "entailment, contradiction, or neutral given a premise.', 'input_fields': ['premise', 'hypothesis'], 'output_field': "
              "['label']}, 'task2': {'instruction': 'This task asks models to write a premise that entails, contradicts to, or is "
              "neutral to the hypothesis.', 'input_fields': ['label', 'hypothesis'], 'output_field': ['premise']}}")

REPLY = str({
    "task1": {"instruction": "Classify the ticket.", "input_fields": ["message"], "output_field": ["category"]},
    "task2": {"instruction": "Suggest the action to take.", "input_fields": ["message", "category"], "output_field": ["action"]},
    "task3": {"instruction": "Guess the priority.", "input_fields": ["message"], "output_field": ["priority"]},
    "task4": {"instruction": "Repeat the message.", "input_fields": ["message"], "output_field": ["message"]},
    "task5": {"instruction": "Write something.", "input_fields": ["message"], "output_field": []},
    "task6": {"instruction": "Classify the ticket.", "input_fields": ["action"], "output_field": ["category"]},
    "task7": {"instruction": "Write the notes.", "input_fields": ["message"], "output_field": ["notes"]},
    "task8": {"instruction": "Tag the ticket.", "input_fields": ["message"], "output_field": ["tags"]},
    "task9": {"instruction": 5, "input_fields": ["message"], "output_field": ["category"]},
})
EXPECTED = {"Guess the priority.": "unknown_field", "Repeat the message.": "output_in_inputs", "Write something.": "empty_output_field",
            "Classify the ticket.": "duplicate_in_reply", "Write the notes.": "empty_output", "Tag the ticket.": "non_scalar_output",
            "": "malformed_task"}


# A reply that loops (the same three valid tasks again) until max_tokens cuts a fourth dict off mid-string.
CLASSIFY = {"instruction": "Classify the customer's ticket.", "input_fields": ["message"], "output_field": ["category"]}
SUGGEST = {"instruction": "Suggest the action to take {next}.", "input_fields": ["message", "category"], "output_field": ["action"]}
CATEGORY_OF_ACTION = {"instruction": 'Which "category" does the action belong to?', "input_fields": ["action"], "output_field": ["category"]}
LOOPING = (str({"task1": CLASSIFY, "task2": SUGGEST, "task3": CATEGORY_OF_ACTION, "task4": CLASSIFY, "task5": SUGGEST})[:-1]
           + ", 'task6': {'instruction': 'Classify the tick")


class ScriptedDynosaurServer(FakeOpenAI):
    reply = REPLY
    finish = "stop"

    def reply_text(self, body):
        return self.reply

    def completion(self, body, text, finish):
        return FakeOpenAI.completion(body, text, self.finish if finish == "stop" else finish)


@pytest.fixture
def scripted():
    with ScriptedDynosaurServer() as server:
        yield server


def teacher(server, cache=None):
    return CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", max_concurrency=2, timeout_s=5.0, max_retries=1,
                                       backoff_s=0.01), cache, Budget())


def config(**kw):
    return GenerationConfig(method="dynosaur", dynosaur=DynosaurConfig(dataset="unused", **{"tasks_per_round": 1, "rows_per_task": 4, **kw}))


def test_prompt_is_the_references_with_the_dataset_dict_and_its_fields():
    prompt = task_prompt(META, ROWS[:2])
    assert prompt.startswith(
        "Given a dictionary containing a dataset description and a few examples, our goal is to design up to three different tasks based "
        "on this dataset. Each task should still be a dictionary, including the instruction, input fields and one output field. The "
        "following are two examples.\n\nExample 1:\nInput:\n{'task_name': 'squad', 'selected_data': [{")
    assert "\n\nTasks:\n" + SQUAD_TASKS + "\n\nExample 2:\nInput:\n{'task_name': 'anli'" in prompt
    shown = [{"message": r["message"], "category": r["category"], "action": r["action"], "notes": "", "tags": ["a", "b"]} for r in ROWS[:2]]
    assert prompt.endswith(
        "\n\nTasks:\n" + ANLI_TASKS + "\n\nNow given a dictionary as input, please help us to generate new tasks. You may stop when there is "
        "no more plausible task.\n\nInput:\n" + str({"task_name": "tickets", "selected_data": shown, "summary": META.description})
        + "\n\nNote that the input and output fields should not be duplicated and should both appear in ['message', 'category', "
        "'action', 'notes', 'tags']. Each task should still be a dictionary, containing no text or explanations outside the dictionary."
        "\n\nTasks:")
    assert "ticket_id" not in prompt.split("Input:\n")[-1]  # the reference hides fields named like id


def test_truncate_as_the_reference():
    row = {"uid": "x", "text": "  " + "w" * 1200, "n": 3, "flag": True, "opts": ["a" * 400, "b" * 400, "c" * 400], "spans": [{"s": 1}],
           "meta": {"k": "v", "j": 2}, "deep": {"k": [1]}, "none": None}
    t = truncate(row, 1000)
    assert list(t) == ["text", "n", "flag", "opts", "meta"]
    assert t["text"] == "w" * 1000 and t["n"] == "3" and t["flag"] == "True"
    assert t["opts"] == ["a" * 400, "b" * 400]  # a third would pass 1000 chars of JSON
    assert t["meta"] == {"k": "v", "j": 2}


def test_json_replies_read_json_first_and_only_when_asked():
    """generation.dynosaur.json_replies (ours): JSON's true/false/null, which the reference's literal_eval refuses,
    parse; without it the reference's parser is unchanged."""
    reply = '{"task1": {"instruction": "Is it spam?", "input_fields": ["message"], "output_field": ["category"], "binary": true}}'
    assert parse_tasks(reply) is None and parse_tasks(reply, json_first=True)[0]["binary"] is True
    assert parse_tasks(REPLY, json_first=True) == parse_tasks(REPLY)  # a Python dict still parses, by literal_eval
    from generation.methods.dynosaur import task_messages

    meta = DatasetMeta("d", "A dataset.", ["message", "category"], [{"message": "hi", "category": "ham"}])
    plain, asked = task_messages(meta, meta.rows), task_messages(meta, meta.rows, json_replies=True)
    assert asked[0][1] == plain[0][1] + "\n\nReply with the tasks as one JSON object." and asked[1] == plain[1]


def test_parse_tasks_reads_python_dicts_and_rejects_prose():
    assert len(parse_tasks(REPLY)) == 9
    assert parse_tasks("Here are the tasks:\n```\n" + REPLY + "\n```") is not None
    assert parse_tasks("I would design a classification task.") is None and parse_tasks("[1, 2]") is None


def test_input_formatting_as_organize_data():
    row = {"q": " Why? ", "n": 4, "choices": ["red", "blue"], "words": ["x", "y"], "bad": [1, 2], "d": {"a": 1}}
    assert format_input(row, ["q"]) == "Why?"
    assert format_input(row, ["q", "n"]) == "q is 'Why?'. n is '4'. "
    assert format_input(row, ["choices"]) == " A. 'red', B. 'blue'."
    assert format_input(row, ["words"]) == "'x', 'y'. "
    assert format_input(row, ["bad"]) == "" and format_input(row, ["d"]) == "" and format_input(row, ["q", "missing"]) == ""


def test_label_space_as_organize_data():
    rows = [{"y": CATEGORIES[i % 3], "z": "yes" if i < 80 else "no", "w": f"answer {i}", "long": ["short", "a much longer label"][i % 2]}
            for i in range(120)]
    assert label_space(rows, "y") == ("", " Answers must be one of billing, hardware, network.")
    assert label_space(rows, "z") == ("imbalanced_labels", "")  # 80 of the first 100 are "yes"
    assert label_space(rows, "w") == ("", "")  # open output: more than 10 distinct values
    assert label_space(rows, "long") == ("", "")  # balanced, but a label is longer than 15 characters
    assert label_space([{"y": "same"}] * 5, "y") == ("imbalanced_labels", "")


def test_round_drops_invalid_tasks_and_builds_instances_from_rows(scripted, tmp_path):
    seen = set()
    kept, rejected, stats = run_dynosaur_round(teacher(scripted), META, seen, config(), 0, 11, random.Random(0))
    assert stats.requests == 9 and len(rejected) == 7 and sum(stats.rejected.values()) == 7
    assert {r["instruction"]: r["reason"] for r in rejected} == EXPECTED
    for r in rejected:
        assert r["stage"] == "task" and r["raw"] == REPLY and r["filters"][-1] == {**r["filters"][-1], "kept": False, "reason": r["reason"]}

    by_task = {}
    for row in kept:
        by_task.setdefault(row["task"], []).append(row)
        j = row["provenance"]["row_index"]
        assert row["method"] == "dynosaur" and row["context"] == "" and set(row["requests"]) == {"tasks"}
        assert all(f["kept"] for f in row["filters"]) and row["provenance"]["shown_rows"]
    assert sorted(by_task) == ["tickets_action", "tickets_category"] and all(len(v) == 4 for v in by_task.values())
    for row in by_task["tickets_category"]:
        src = ROWS[row["provenance"]["row_index"]]
        assert row["instruction"] == "Classify the ticket. Answers must be one of billing, hardware, network."
        assert row["input"] == src["message"] and row["output"] == src["category"]
    for row in by_task["tickets_action"]:
        src = ROWS[row["provenance"]["row_index"]]
        assert row["instruction"] == "Suggest the action to take."
        assert row["input"] == f"message is '{src['message']}'. category is '{src['category']}'. " and row["output"] == src["action"]
        assert row["output"]  # rows whose action is empty are never used
    assert len({r["id"] for r in kept + rejected}) == len(kept) + len(rejected)

    body = scripted.requests[0]
    assert body["temperature"] == 0.0 and body["top_p"] == 1.0 and body["max_tokens"] == 256
    assert body["messages"][0] == {"role": "system", "content": "You are a helpful assistant for task design."}

    # The next round gets the same proposals: the valid ones are now duplicates of tasks seen.
    kept2, rejected2, _ = run_dynosaur_round(teacher(scripted), META, seen, config(), 1, 11, random.Random(1))
    assert not kept2
    assert next(r for r in rejected if r["reason"] == "unknown_field")["filters"][-1]["unknown"] == ["priority"]  # the trace names it
    reasons = {r["instruction"]: r["reason"] for r in rejected2}
    assert reasons["Suggest the action to take."] == "duplicate_seen" and reasons["Guess the priority."] == "unknown_field"


def test_complete_dicts_respect_strings_and_nesting():
    assert complete_dicts(LOOPING) == [str(t) for t in (CLASSIFY, SUGGEST, CATEGORY_OF_ACTION, CLASSIFY, SUGGEST)]
    prose = "Here's what I'd do: {'a': '}'} and {'b': {'c': 1}} then {'d"
    assert complete_dicts(prose) == ["{'a': '}'}", "{'b': {'c': 1}}"]
    assert complete_dicts("{'a': 'it\\'s'}") == ["{'a': 'it\\'s'}"] and complete_dicts("no dicts {") == []
    assert salvage_tasks(LOOPING) == ([CLASSIFY, SUGGEST, CATEGORY_OF_ACTION], 2)
    assert salvage_tasks(str(CLASSIFY) + "\n" + str(CLASSIFY) + "\n{'instruction'") == ([CLASSIFY], 1)  # flat dicts, not wrapped
    assert parse_tasks(LOOPING) is None  # the reference's parse gives up on it


def test_a_cut_off_looping_reply_is_salvaged_only_when_asked(scripted):
    scripted.reply, scripted.finish = LOOPING, "length"
    kept, rejected, stats = run_dynosaur_round(teacher(scripted), META, set(), config(), 0, 3, random.Random(0))
    assert not rejected and stats.requests == 3 and not stats.rejected
    proposed = sorted({r["provenance"]["proposed_instruction"] for r in kept})
    assert proposed == sorted(t["instruction"] for t in (CLASSIFY, SUGGEST, CATEGORY_OF_ACTION))
    assert len(kept) == 3 * 4 and sorted({r["provenance"]["task_index"] for r in kept}) == [0, 1, 2]
    salvage = {"filter": "dynosaur_salvage", "kept": True, "reason": "", "finish_reason": "length", "tasks": 3, "repeats_dropped": 2}
    assert all(r["filters"][0] == salvage and all(f["kept"] for f in r["filters"]) for r in kept)

    kept, rejected, stats = run_dynosaur_round(teacher(scripted), META, set(), config(salvage_tasks=False), 0, 3, random.Random(0))
    assert not kept and [r["reason"] for r in rejected] == ["unparseable_tasks"] and stats.requests == 1
    assert rejected[0]["raw"] == LOOPING and rejected[0]["filters"] == [{"filter": "dynosaur_parse", "kept": False, "reason": "unparseable_tasks"}]


def test_salvaged_tasks_are_vetted_by_the_same_rules(scripted):
    priority = {"instruction": "Guess the priority.", "input_fields": ["message"], "output_field": ["priority"]}
    scripted.reply = "Tasks:\n" + str(CLASSIFY) + "\n" + str(priority) + "\n" + str(CLASSIFY) + "\n{'instruction': 'Guess"
    kept, rejected, stats = run_dynosaur_round(teacher(scripted), META, set(), config(), 0, 3, random.Random(0))
    assert stats.requests == 2 and {r["provenance"]["proposed_instruction"] for r in kept} == {CLASSIFY["instruction"]}
    assert [r["reason"] for r in rejected] == ["unknown_field"] and rejected[0]["stage"] == "task"
    assert [f["filter"] for f in rejected[0]["filters"]] == ["dynosaur_salvage", "dynosaur_fields"]
    assert rejected[0]["filters"][-1]["unknown"] == ["priority"] and rejected[0]["filters"][0]["finish_reason"] == "stop"


def test_unparseable_and_failed_replies_are_rejected_rows(scripted):
    scripted.reply = "I think a good task would be to classify tickets by category."
    kept, rejected, stats = run_dynosaur_round(teacher(scripted), META, set(), config(tasks_per_round=2), 0, 1, random.Random(0))
    assert not kept and [r["reason"] for r in rejected] == ["unparseable_tasks"] * 2 and stats.requests == 2
    scripted.reply, scripted.faults = "{}", ["401"]
    t = CachedTeacher(OpenAITeacher("fake-teacher", scripted.base_url, "", max_concurrency=1, timeout_s=5.0, max_retries=0), None, Budget())
    _, rejected, _ = run_dynosaur_round(t, META, set(), config(tasks_per_round=2), 0, 2, random.Random(0))
    assert [r["reason"] for r in rejected] == ["teacher_http_401", "no_tasks"]


def test_rerun_hits_the_cache(scripted, tmp_path):
    first = run_dynosaur_round(teacher(scripted, TeacherCache(tmp_path / "c.sqlite")), META, set(), config(tasks_per_round=3), 4, 9, random.Random(5))
    sent = len(scripted.requests)
    again = teacher(scripted, TeacherCache(tmp_path / "c.sqlite"))
    second = run_dynosaur_round(again, META, set(), config(tasks_per_round=3), 4, 9, random.Random(5))
    assert len(scripted.requests) == sent == 3 and again.ledger.calls == 0
    assert first[0] == second[0] and first[1] == second[1]
    assert len({b["seed"] for b in scripted.requests}) == 3


def test_load_a_datasets_folder_with_its_description(tmp_path):
    info = datasets.DatasetInfo(description="Tickets and their categories.")
    ds = datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "tags"} for r in ROWS], info=info)
    ds.save_to_disk(str(tmp_path / "flat"))
    meta = load_dataset_meta(DynosaurConfig(dataset=str(tmp_path / "flat")))
    assert meta.name == "flat" and meta.description == "Tickets and their categories."
    assert meta.fields == ["ticket_id", "message", "category", "action", "notes"] and meta.rows[3]["message"] == ROWS[3]["message"]
    assert load_dataset_meta(DynosaurConfig(dataset=str(tmp_path / "flat"), description="Mine.")).description == "Mine."

    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_dataset_meta(DynosaurConfig(dataset=str(tmp_path / "dict"))).rows) == 30
    with pytest.raises(DataError, match="generation.dynosaur.split"):
        load_dataset_meta(DynosaurConfig(dataset=str(tmp_path / "dict"), split="test"))
    datasets.Dataset.from_list([{"x": "1", "y": "2"}]).save_to_disk(str(tmp_path / "bare"))
    with pytest.raises(DataError, match="generation.dynosaur.description"):
        load_dataset_meta(DynosaurConfig(dataset=str(tmp_path / "bare")))


def test_load_jsonl_needs_a_description(tmp_path):
    shipped = REPO / "configs" / "methods" / "dynosaur_data" / "fc200_support_tickets.jsonl"
    with pytest.raises(DataError, match="generation.dynosaur.description"):
        load_dataset_meta(DynosaurConfig(dataset=str(shipped)))
    meta = load_dataset_meta(DynosaurConfig(dataset=str(shipped), description="FC-200 tickets."))
    assert meta.name == "fc200_support_tickets" and "customer_message" in meta.fields and len(meta.rows) > 10
    (tmp_path / "one.jsonl").write_text('{"id": 1, "text": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="at least two"):
        load_dataset_meta(DynosaurConfig(dataset=str(tmp_path / "one.jsonl"), description="x"))
    with pytest.raises(DataError, match="not found"):
        load_dataset_meta(DynosaurConfig(dataset=str(tmp_path / "missing.jsonl"), description="x"))
