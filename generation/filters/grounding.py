"""Grounding checks: is an instruction about its passage, and is an answer supported by it?

Pure functions of text. The lexical checks compare *content tokens* (lower-cased words and identifiers,
without stop words and the words every task uses, such as "explain" or "passage"), reduced to a crude
stem (their first 6 characters, so "configure"/"configuration" and "returns"/"returned" meet), with the
passage's. A teacher judge (one short yes/no call) is the method stage's business; its verdict is parsed
here (`judge_verdict`).

Thresholds were read off real rows (LOG.md, 2026-12-02): an instruction that took its topic from a shown
example ("When was Gutenberg's printing press invented?" on a chunk about authentication) scores 0-0.2,
one about the chunk 0.6-1.0.
"""
from __future__ import annotations

import re

# Words that carry no topic: English function words, and the vocabulary of tasks and of talk about the passage.
STOP = frozenset("""
a about above according after again against all also an and any are as at be because been before being below
between both but by can could did do does doing done down during each either else etc every few for from further
get gets given has have having he her here hers him his how however i if in into is it its itself just let like
may me might more most much must my no nor not now of off on once one only or other our out over own per please
same she should so some such than that the their them then there these they this those through thus to too two
under until up upon us use used uses using very via was way we were what when where whether which while who whom
whose why will with within without would yes you your
answer answers ask brief briefly categorize category classify classification concise create define describe
description detail details determine document documentation example examples excerpt explain explanation extract
find following give identify information instruction key list main mention mentioned mentions name new note
paragraph passage point points provide provided question questions rewrite rephrase say says section sentence
sentences snippet state stated summarize summary summarise task tell text topic write
""".split())

_TOKEN = re.compile(r"[a-z0-9_]+")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")

# "the passage", "this API", "the code above", "the given text": a pointer the closed-book student cannot follow.
_REFERENCE = re.compile(
    r"\b(?:the|this|that|these|those|above|below|given|following|provided|attached)\s+(?:(?:given|above|provided|following|"
    r"attached|code|python)\s+)?(?:passage|text|paragraph|excerpt|document(?:ation)?|article|section|snippet|code|"
    r"page|context|api|example|extract|content|chunk|source)s?\b|\b(?:above|aforementioned)\b"
    # "the factory function", "the YAML file": a thing of the passage's that the text does not name (a named one,
    # "the `rebuild` method", has a backtick before its noun)
    r"|\b(?:the|these)\s+following\s+(?:[\w.]+\s+){0,5}?(?:code|snippets?|examples?|text|passages?|functions?|classes?)\b"
    # ("the given Python script": up to two words between)
    r"|\bthe\s+(?:[a-z]+\s+){0,2}(?:file|function|class|model|method|object|variable|script|program)\b", re.I)

# Answers that say the passage does not hold what was asked. The answer prompt asks for DECLINE exactly.
DECLINE = "NOT IN PASSAGE"
_DECLINE = re.compile(
    r"not in (?:the )?passage|(?:passage|text|context|documentation) (?:does not|doesn't|did not) (?:mention|contain|provide|"
    r"say|specify|include|state|describe|explain|give|cover)|(?:is|are) not (?:mentioned|provided|specified|stated|"
    r"included|given|described|covered) in the (?:passage|text|context)|\bis not (?:mentioned|defined|described|covered)\b|(?:no|not enough) information (?:about|on|in|is|"
    r"to)|cannot be (?:answered|determined|found)|(?:i )?(?:cannot|can't|can not) (?:answer|determine|find)", re.I)


# Answers that send the reader to the passage instead of answering ("The types are specified in the passage.",
# "follow the steps outlined in the dedicated section"): 2 of 21 kept rows of the 1.5B teacher (LOG.md, 2026-12-02).
_DEFERS = re.compile(
    r"\b(?:specified|outlined|listed|described|explained|detailed|shown|provided|mentioned|found|covered|given|documented)"
    r"\s+in\s+(?:the\s+)?(?:given\s+|provided\s+|above\s+|dedicated\s+)?(?:passage|text|documentation|docs|section|"
    r"article|page|code|api documentation)\b|\b(?:refer|see|consult)\s+(?:to\s+)?the\s+(?:passage|text|documentation|"
    r"dedicated section|section|api documentation)\b", re.I)


def stems(text: str) -> list[str]:
    """Content tokens of text, each cut to its first 6 characters."""
    return [t[:6] for t in _TOKEN.findall(text.lower()) if t not in STOP and (len(t) > 1 or t.isdigit())]


def coverage(text: str, source: str) -> float:
    """Share of text's content tokens (with repeats) whose stem occurs in source; 1.0 when text has none."""
    words = stems(text)
    if not words:
        return 1.0
    have = set(stems(source))
    return sum(w in have for w in words) / len(words)


def instruction_grounding(instruction: str, chunk: str) -> float:
    """How much of the instruction's topic is found in its chunk (0..1). Generic text ("Summarize the passage.")
    has no content tokens and scores 1: it is about whatever passage it is given."""
    return coverage(instruction, chunk)


def answer_support(answer: str, source: str) -> tuple[float, list[str]]:
    """(share of the answer's content tokens found in the source, numbers in the answer that the source lacks).
    A number the passage never states is the commonest invented fact ("1760" on a chunk about authentication)."""
    have = set(_NUMBER.findall(source))
    missing = [n for n in dict.fromkeys(_NUMBER.findall(answer)) if n not in have]
    return coverage(answer, source), missing


def refers_to_passage(text: str) -> bool:
    """Does the text point at a passage, text or code it does not carry ("the passage", "this API", "above")?"""
    return bool(_REFERENCE.search(text))


_DEFINED = re.compile(r"^\s*(?:class|def|async\s+def)\s+([A-Za-z_]\w*)|^\s*([A-Za-z_]\w*)\s*(?::[^=\n]+)?=(?!=)", re.M)
_CODEISH = re.compile(r"`@?([A-Za-z_]\w*)(?:\(\))?`|\b([A-Za-z]+[A-Z_]\w*|[A-Z][a-z]+[A-Z]\w*)\b")


def example_names(text: str, chunk: str) -> list[str]:
    """Names the text uses that the chunk's own code defines (`class Model`, `MyInt = int`, `def ensure_list`):
    names of a worked example, which a reader without the chunk cannot look up ("What is the `MyInt` type?").
    Only names written as code count (in backticks, CamelCase or with an underscore), so 'data' is not one."""
    defined = {a or b for a, b in _DEFINED.findall(chunk)}
    used = [a or b for a, b in _CODEISH.findall(text)]
    return [n for n in dict.fromkeys(used) if n in defined and len(n) > 2]


def is_decline(answer: str) -> bool:
    """Did the teacher say the passage does not hold the answer? Only the start is read, where a decline sits,
    so an answer that mentions a limitation later on is not a decline."""
    return bool(_DECLINE.search(answer[:200]))


def defers_to_passage(answer: str) -> bool:
    """Does the answer point the reader at the passage or other docs rather than giving the answer?"""
    return bool(_DEFERS.search(answer))


def judge_verdict(text: str) -> str:
    """'yes', 'no' or '' (unparseable) from a yes/no judge reply."""
    m = re.match(r"\W*(yes|no)\b", text.strip().lower())
    return m.group(1) if m else ""


_YES_NO = re.compile(r"^\W*(?:yes|no)\b(?=\s*(?:[.,!;:]|$))", re.I)  # "No timeout is set." is an answer, "No." is not
# A yes/no question: an auxiliary at the start of a clause ("According to the passage, is ...?"), or "if"/"whether".
_ASKS_YES_NO = re.compile(r"(?:^|[.?!:;,]\s*)\W*(?:is|are|was|were|does|do|did|can|could|should|will|would|has|have|had|may|must)\b"
                          r"(?!\s+you\b)|\b(?:yes or no|true or false|whether|if)\b", re.I)


def yes_no_mismatch(instruction: str, answer: str) -> bool:
    """A bare yes or no to a task that asks for something else ("Classify the usage errors in the passage." ->
    "Yes"; "Can you explain what `plugin_settings` does?" -> "Yes, ..."): the answer does not do the task.
    instruction: the task with its input (a question may sit in the input)."""
    return bool(_YES_NO.match(answer)) and not _ASKS_YES_NO.search(instruction)
