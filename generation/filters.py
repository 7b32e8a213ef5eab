"""Basic filters for generated instructions and answers. Each returns a rejection reason or ''."""
from __future__ import annotations

import re

from generation.novelty import NoveltyFilter, NoveltyResult, rouge_l_f  # noqa: F401 (re-exported)

ECHO_THRESHOLD = 0.5
# Phrases that only make sense as talk about the generation prompt itself.
_META = re.compile(r"\b(?:the examples?|in the style of|the passage above|(?:new|this) (?:\w+ )?task\b"
                   r"|(?:write|create|rewrite|generate|make) (?:a|an|one|the|new)\b.{0,30}\btasks?\b)", re.I)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 as rouge_score computes it (lower-case, non-alphanumerics dropped, no stemming), exactly, in C."""
    return rouge_l_f(a, b)


def instruction_problem(text: str, examples: list[str], directive: str, min_words: int, max_words: int,
                        max_similarity: float) -> tuple[str, float, float]:
    """('' or reason, highest ROUGE-L against the shown examples, ROUGE-L against the prompt's directive).

    An instruction that restates the directive ("Write a new task about the passage...") is an echo, not a task.
    """
    words = len(text.split())
    if not text.strip():
        return "empty", 0.0, 0.0
    if words < min_words:
        return "too_short", 0.0, 0.0
    if words > max_words:
        return "too_long", 0.0, 0.0
    best = max((rouge_l(text, e) for e in examples), default=0.0)
    echo = rouge_l(text, directive)
    if best > max_similarity:
        return "copy_of_example", best, echo
    if echo > ECHO_THRESHOLD or _META.search(text):
        return "echoes_prompt", best, echo
    return "", best, echo


def answer_problem(text: str, finish_reason: str, max_words: int) -> str:
    if finish_reason == "length":
        return "answer_truncated"
    if not re.search(r"\w", text):
        return "empty_answer"
    if len(text.split()) > max_words:
        return "answer_too_long"
    return ""
