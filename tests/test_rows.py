"""One row schema: readers see every method's rows, and rows written before the schema, the same way."""
import json

from generation.rows import chunk_id, new_row, pool_ids, rejected_row, upgrade

OLD_DAIG = {"id": "r1-00003", "round": 1, "method": "daig", "task": "question_answering", "example_ids": ["dom-qa-03", "gen-qa-04"],
            "chunk_id": "11_faq.md#8", "heading": "FAQ > Move", "teacher_model": "t", "instruction_request": "a" * 64,
            "filters": [{"filter": "instruction", "kept": True, "reason": ""}], "requested_task": "question_answering",
            "instruction": "What?", "input": "", "context": "text", "answer_request": "b" * 64, "output": "That.", "split": "train"}


def test_an_old_daig_row_is_read_in_the_schema_and_a_new_row_is_left_alone():
    row = upgrade(OLD_DAIG)
    assert row["requests"] == {"instruction": "a" * 64, "answer": "b" * 64}
    assert row["provenance"] == {"example_ids": ["dom-qa-03", "gen-qa-04"], "chunk_id": "11_faq.md#8", "heading": "FAQ > Move",
                                 "requested_task": "question_answering"}
    assert {k: v for k, v in row.items() if k not in ("requests", "provenance")} == \
        {k: v for k, v in OLD_DAIG.items() if k not in ("instruction_request", "answer_request", "example_ids", "chunk_id", "heading", "requested_task")}
    assert chunk_id(row) == "11_faq.md#8" and pool_ids(row) == ["dom-qa-03", "gen-qa-04"]
    assert upgrade(row) is row and upgrade(json.loads(json.dumps(row))) == row


def test_readers_need_no_method():
    evolved = new_row("r1-00000", 1, "evol_instruct", "qa", "t", {"evolve": "k"}, {"parent_id": "gen-qa-01", "operator": "deepen"})
    seeded = new_row("", 1, "self_instruct", "", "t", {"instruction": "k"}, {"seed_ids": ["seed_task_1"]})
    assert pool_ids(evolved) == ["gen-qa-01"] and pool_ids(seeded) == [] and chunk_id(evolved) is None
    bad = rejected_row(seeded, "novelty", "similar_to_pool", "raw text", instruction="x", filters=[{"filter": "novelty"}])
    assert (bad["stage"], bad["reason"], bad["raw"], bad["instruction"]) == ("novelty", "similar_to_pool", "raw text", "x")
    assert list(bad)[:8] == ["id", "round", "method", "task", "teacher_model", "requests", "provenance", "filters"]
