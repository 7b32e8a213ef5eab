"""The optional test-set judge: the teacher grades greedy test answers on a fixed rubric, under its own cap, counted
at the loopback server apart from generation's calls (tiny real student, real training)."""
import json
import re

import pytest

from eval.judge import judge_prompt, judge_score, parse_verdict
from loop.controller import run
from test_eval_sets import TEST, VALIDATION, _write
from test_loop import _config


def test_verdicts_parse_and_score():
    replies = {"CORRECT": "correct", "Verdict: WRONG": "wrong", "**Grade:** PARTLY": "partly", "Partially correct.": "partly",
               "incorrect": "wrong", "WRONG. The answer is not supported": "wrong",
               "I cannot say": "", "Not correct": "", "isn't correct": "", "CORRECT or WRONG": "", "The student is correct": ""}
    assert {t: parse_verdict(t) for t in replies} == replies
    assert judge_score(["correct", "partly", "wrong", ""]) == (0.5, 3) and judge_score([""]) == (None, 0)
    prompt = judge_prompt({"instruction": "Which app?", "reference": "Ferncast Home.", "student": ""})
    assert "Which app?" in prompt and "Ferncast Home." in prompt and "(empty)" in prompt and "CORRECT" in prompt


def _grades(server) -> list[str]:
    return [b["messages"][-1]["content"] for b in server.requests if b["messages"][-1]["content"].startswith("Grade a student's answer")]


def test_judge_grades_test_answers_under_its_own_cap(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    monkeypatch.setenv("DAIG_TEST_KEY", "k")
    val, test = _write(tmp_path / "val.jsonl", VALIDATION), _write(tmp_path / "test.jsonl", TEST)
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, f"eval.validation_path={val}", f"eval.test_path={test}",
                  "eval.judge=true", "eval.judge_max_calls=1", "eval.generation_samples=2", "rounds=2")
    out = tmp_path / "run"
    history = run(cfg, out)

    # Counted at the edge: one grading call (the cap), never a second; generation's ledger does not include it.
    assert len(_grades(fake_openai)) == 1 == history[-1]["judge_teacher_calls"]
    assert len(fake_openai.requests) == history[-1]["run_teacher_calls"] + history[-1]["judge_teacher_calls"]
    first = history[0]
    assert first["test_judge_n"] == 1 and first["test_judge_verdicts"]["ungraded"] == 1
    samples = [json.loads(x) for x in (out / "rounds" / "1" / "eval_samples.jsonl").read_text().splitlines()]
    graded = [s for s in samples if s["judge"] in ("correct", "wrong")]
    assert len(graded) == 1 and [s["judge"] for s in samples if s not in graded] == ["error: budget_exhausted"]
    (wandb_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")  # every per-task test figure and the grade reach W&B
    logged = wandb_file.read_bytes()
    for name in (b"test_task_loss/question_answering", b"task_eval_se/question_answering", b"test_task_n/extraction",
                 b"test_judge_score", b"test_judge_verdicts/ungraded", b"judge_teacher_calls"):
        assert name in logged, name
    s = graded[0]  # the loopback grader says CORRECT when the answer shares a word of 4+ letters with the reference
    shared = set(re.findall(r"[a-z]{4,}", s["reference"].lower())) & set(re.findall(r"[a-z]{4,}", s["student"].lower()))
    assert s["judge"] == ("correct" if shared else "wrong") and first["test_judge_score"] == (1.0 if shared else 0.0)


def test_judge_without_a_test_set_fails_before_any_teacher_call(tmp_path, tiny_corpus, fake_openai, tiny_model):
    from loop.config import ConfigError
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "eval.judge=true")
    with pytest.raises(ConfigError, match="eval.judge grades greedy answers on the test set"):
        run(cfg, tmp_path / "run")
    assert not fake_openai.requests
