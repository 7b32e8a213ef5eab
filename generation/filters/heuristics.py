"""Self-Instruct's keep/drop heuristics for a machine-written instruction (bootstrap_instructions.py,
post_process_gpt3_response), shared by self_instruct and alpaca (which passes its longer blacklist)."""
from __future__ import annotations

import re
import string

BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw", "plot", "go to")
MIN_WORDS_EXCLUSIVE, MAX_WORDS = 3, 150  # rejected when words <= 3 or > 150


def find_word(word: str, text: str) -> bool:
    """The reference's find_word_in_string: whole word, any case."""
    return re.search(r"\b({0})\b".format(word), text, flags=re.IGNORECASE) is not None


def heuristic_verdict(inst: str, blacklist: tuple[str, ...] = BLACKLIST) -> dict:
    """The reference's keep/drop rules in its order, as a filter decision (Alpaca passes its longer blacklist)."""
    words = len(inst.split())
    reason, extra = "", {}
    if words <= MIN_WORDS_EXCLUSIVE:
        reason = "too_short"
    elif words > MAX_WORDS:
        reason = "too_long"
    elif any(find_word(w, inst) for w in blacklist):
        reason, extra = "blacklisted_word", {"word": next(w for w in blacklist if find_word(w, inst))}
    elif inst.startswith("Write a program"):
        reason = "write_a_program"
    elif inst[0] in string.punctuation:
        reason = "starts_with_punctuation"
    elif not inst[0].isascii():
        reason = "starts_with_non_ascii"
    return {"filter": "heuristics", "kept": not reason, "reason": reason, "words": words, **extra}
