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
_WORDS = {"correct": "correct", "partly": "partly", "partially": "partly", "partial": "partly", "wrong": "wrong", "incorrect": "wrong"}
_LEAD = {"verdict", "grade", "rating", "answer", "the", "is", "final"}  # "Verdict: WRONG", "**Grade:** CORRECT"
_NEGATION = {"not", "isn't", "never", "no"}


def judge_prompt(sample: dict) -> str:
    """The grading prompt for one scored sample (its 'instruction' is the whole prompt the student saw)."""
    return PROMPT.format(question=sample["instruction"], reference=sample["reference"], student=sample["student"] or "(empty)")


def parse_verdict(text: str) -> str:
    """'correct', 'partly' or 'wrong' when the reply opens with one verdict (a label such as "Verdict:" allowed) and
    names no other ("Partially correct" is partly); '' when it opens otherwise, names two, or negates one ("Not
    correct" opens with no verdict)."""
    words = re.findall(r"[a-z']+", text.lower())
    while words and words[0] in _LEAD:
        words = words[1:]
    if not words or words[0] not in _WORDS:
        return ""
    named = set()
    for i, w in enumerate(words):
        after_partly = w == "correct" and i and _WORDS.get(words[i - 1]) == "partly"
        if w in _WORDS and not after_partly and not (i and words[i - 1] in _NEGATION):
            named.add(_WORDS[w])
    return _WORDS[words[0]] if len(named) == 1 else ""


def judge_score(verdicts: list[str]) -> tuple[float | None, int]:
    """Mean score (correct 1, partly 0.5, wrong 0) over the parsed verdicts, and how many there were."""
    scored = [SCORES[v] for v in verdicts if v in SCORES]
    return (sum(scored) / len(scored) if scored else None), len(scored)
