"""A teacher's grade of the student's greedy answers on the test set: a fixed three-way rubric, parsed here.

ROUGE-L against the reference says little about a free-form answer's truth; a grader reading question, reference
and answer does. The calls are the loop's business (cached, counted, under eval.judge_max_calls); this module only
writes the prompt and reads the verdict, so eval/ stays free of the teacher.
"""
from __future__ import annotations

import re

PROMPT = """Grade a student's answer against the reference answer.

Question:
{question}

Reference answer:
{reference}

Student answer:
{student}

Reply with one word: CORRECT (it says what the reference says and nothing false), PARTLY (partly right, or incomplete) or WRONG (wrong, unsupported, off-topic or empty)."""

SCORES = {"correct": 1.0, "partly": 0.5, "wrong": 0.0}
_VERDICT = re.compile(r"\b(correct|incorrect|partly|partially|partial|wrong)\b", re.I)
_SAME = {"incorrect": "wrong", "partially": "partly", "partial": "partly"}


def judge_prompt(sample: dict) -> str:
    """The grading prompt for one scored sample (its 'instruction' is the whole prompt the student saw)."""
    return PROMPT.format(question=sample["instruction"], reference=sample["reference"], student=sample["student"] or "(empty)")


def parse_verdict(text: str) -> str:
    """'correct', 'partly', 'wrong', or '' when the reply names none of them (first one named wins)."""
    m = _VERDICT.search(text)
    if not m:
        return ""
    word = m.group(1).lower()
    return _SAME.get(word, word)


def judge_score(verdicts: list[str]) -> tuple[float | None, int]:
    """Mean score (correct 1, partly 0.5, wrong 0) over the parsed verdicts, and how many there were."""
    scored = [SCORES[v] for v in verdicts if v in SCORES]
    return (sum(scored) / len(scored) if scored else None), len(scored)
