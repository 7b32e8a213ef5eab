"""Basic filters for generated instructions and answers. Each returns a rejection reason or ''."""
from __future__ import annotations

import re

from generation.filters.novelty import NoveltyFilter, NoveltyResult, rouge_l_f  # noqa: F401 (re-exported)

ECHO_THRESHOLD = 0.5
# Phrases that only make sense as talk about the generation prompt itself.
_META = re.compile(r"\b(?:the examples?|in the style of|the passage above|(?:new|this) (?:\w+ )?task\b"
                   r"|(?:write|create|rewrite|generate|make) (?:a|an|one|the|new)\b.{0,30}\btasks?\b)", re.I)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 as rouge_score computes it (lower-case, non-alphanumerics dropped, no stemming), exactly, in C."""
    return rouge_l_f(a, b)


def instruction_problem(text: str, examples: list[str], directive: str, min_words: int, max_words: int,
                        max_similarity: float, input_text: str = "") -> tuple[str, float, float]:
    """('' or reason, highest ROUGE-L against what the prompt showed, ROUGE-L against the prompt's directive).

    examples: every text the prompt showed (each example's instruction, and its input and output when shown). The
    candidate's instruction, its input and the two together are each compared with each, so a pasted example input
    is caught as a copy. An instruction that restates the directive ("Write a new task about the passage...") is an
    echo, not a task.
    """
    words = len(text.split())
    if not text.strip():
        return "empty", 0.0, 0.0
    if words < min_words:
        return "too_short", 0.0, 0.0
    if words > max_words:
        return "too_long", 0.0, 0.0
    pieces = [text] + ([input_text, f"{text} {input_text}"] if input_text else [])
    best = max((rouge_l(p, e) for p in pieces for e in examples), default=0.0)
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


# Verbs that identify a task type from its instruction. Question answering and explanation overlap too much to
# tell apart by wording ("How does X work?"), so they are never relabelled and never relabel others.
_TASK_CUES = {
    "classification": re.compile(r"\b(?:classify|categori[sz]e|which category|label (?:the|each|it)|is (?:it|this|the \w+) (?:a|an)\b.{0,40}\bor\b)", re.I),
    "summarization": re.compile(r"\b(?:summari[sz]e|summary|tl;?dr|in (?:one|two|three|\d) sentences?|key points)\b", re.I),
    "extraction": re.compile(r"\b(?:extract|list (?:all|every|each|the)|find (?:all|every)|identify (?:all|every|each))\b", re.I),
    "rewriting": re.compile(r"\b(?:rewrite|rephrase|paraphrase|reword|simplify|translate|make (?:it|this|the \w+) (?:more|less|shorter|clearer))\b", re.I),
}


def followed_task(instruction: str, task: str) -> str:
    """The task type the instruction reads as: `task` when it shows that type's cue or no other type's; otherwise
    the one type whose cue it shows (checked only for the four types with clear cues)."""
    if task in _TASK_CUES and _TASK_CUES[task].search(instruction):
        return task
    hits = [t for t, cue in _TASK_CUES.items() if t != task and cue.search(instruction)]
    return hits[0] if len(hits) == 1 else task


# A classification task is defined by its classes: "Classify X as A or B", "into ...", "whether ...", "true or false".
# "Classify the recommended practice in the passage." names none, and the 1.5B teacher answered such tasks with a
# made-up label ("Reuse", "Positive"); LOG.md, 2026-12-06.
_CLASSES = re.compile(r"(?<!such )\b(?:as|into|between)\b[^.?\n]{0,160}?\b(?:or|and)\b|\beither\b|\bwhether\b|\bif\b|\bone of\b|"
                      r"\bwhich (?:of|category|class|label|group)\b|:\s*[^,\n]{1,40},\s*\S|\b(?:true|false|yes|no|positive|negative|neutral)\b"
                      r".{0,20}\bor\b|\bcategor(?:y|ies)\s*:|\b(?:labels?|classes)\s*:", re.I)


def names_classes(text: str) -> bool:
    """Does a classification task say which classes to choose from? Read on the instruction alone: an input's code
    ("import numpy as np ... a or b") would pass any pattern."""
    return bool(_CLASSES.search(text))
