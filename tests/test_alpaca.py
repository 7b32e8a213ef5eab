"""Alpaca: parity with tatsu-lab/stanford_alpaca's generate_instruction.py (tests/reference, verbatim copies) and one
round through the loopback OpenAI-protocol server with canned replies in Alpaca's '###' format."""
import json
import random
import re
import sys
from pathlib import Path

import pytest

from conftest import TEST_DATA
from generation.methods.alpaca import (ALPACA_BLACKLIST, STOP, alpaca_request, encode_prompt, parse_reply,
                               run_alpaca_round, seed_example)
from generation.teacher.cache import Budget, CachedTeacher, TeacherCache
from generation.config import AlpacaConfig, GenerationConfig
from generation.filters.novelty import NoveltyFilter
from generation.data.seeds import load_seed_tasks
from generation.filters.heuristics import heuristic_verdict
from generation.teacher.backends import OpenAITeacher
from openai_server import FakeOpenAI

REFERENCE = Path(__file__).parent / "reference"
sys.path.insert(0, str(REFERENCE))
import alpaca_generate_instruction as ref  # noqa: E402

SEED_FILE = TEST_DATA / "self_instruct_seed_tasks.jsonl"


@pytest.fixture(scope="module")
def seeds():
    return load_seed_tasks(str(SEED_FILE))


@pytest.fixture
def in_reference(monkeypatch):
    monkeypatch.chdir(REFERENCE)  # the reference's encode_prompt opens ./prompt.txt


def test_prompt_txt_is_the_reference_file():
    """The packaged template (generation/methods/templates/alpaca/prompt.jinja) starts with prompt.txt, verbatim."""
    assert encode_prompt([]) == (REFERENCE / "prompt.txt").read_text(encoding="utf-8") + "\n###\n1. Instruction:"


@pytest.mark.parametrize("s", [0, 1, 42])
def test_prompts_equal_the_reference_for_the_same_random_seed(seeds, in_reference, s):
    """generate_instruction.py samples with the global `random` (it never seeds it); random.seed(s) there and
    random.Random(s) here draw the same seed tasks, because the module functions are methods of one hidden Random."""
    raw = [json.loads(line) for line in SEED_FILE.read_text().splitlines()]
    data = ref.reference_seed_data(raw)
    assert [seed_example(t) for t in seeds] == data
    ac = AlpacaConfig()
    random.seed(s)
    expected = ref.reference_prompt_batch(ac.prompts_per_round, data, ac.num_prompt_instructions)
    rng = random.Random(s)
    plans = [rng.sample(seeds, ac.num_prompt_instructions) for _ in range(ac.prompts_per_round)]
    assert [alpaca_request(p, ac, 0).messages[0][1] for p in plans] == expected
    assert random.random() == rng.random()
    assert "<noinput>" in "".join(expected) and expected[0].endswith("###\n4. Instruction:")


def test_encode_prompt_equals_the_reference_on_awkward_examples(in_reference):
    examples = [{"instruction": "  Fill the blank:\n\n", "input": "", "output": "  x  "},
                {"instruction": "Translate\tthis:", "input": "Hola", "output": "Hello"}]
    assert encode_prompt(examples) == ref.encode_prompt(examples)


def test_request_parameters_equal_the_reference(seeds):
    expected = ref.reference_request_params()
    req = alpaca_request(seeds[:3], AlpacaConfig(), 5)
    assert (req.temperature, req.top_p, req.max_tokens, list(req.stop)) == (
        expected["temperature"], expected["top_p"], expected["max_tokens"], expected["stop"])
    assert req.presence_penalty == 0.0  # OpenAIDecodingArguments' default; logit_bias is not sent (see generation/methods/alpaca.py)


def block(n, instruction, inp="<noinput>", output="An answer."):
    return f"{n}. Instruction: {instruction}\n{n}. Input:\n{inp}\n{n}. Output:\n{output}\n###\n"


LONG = " ".join(["word"] * 149)
CRAFTED = [
    " Give three tips for staying healthy.\n4. Input:\n<noinput>\n4. Output:\nEat, sleep, move.\n###\n"
    + block(5, "Rewrite the sentence in passive voice.", "The cat chased the mouse.", "The mouse was chased.")
    + block(6, "Describe the video in one sentence.") + block(7, "Name a musical instrument with strings.")
    + block(8, "Compose some music for a short film.") + block(9, "Draw a Flowchart for making tea.")
    + block(10, "Explain this DIAGRAM to a child.") + block(11, "Summarize the audio transcript below.", "Hi all."),
    " Three words only.\n4. Input:\n<NoInput>\n4. Output:\nx\n###\n" + block(5, "Four words right here.", "<NOINPUT>")
    + block(6, LONG + " x") + block(7, LONG + " x y") + block(8, "Write a program to add numbers.")
    + block(9, "(Optional) explain the answer below.") + block(10, "Écrivez une phrase en français, s'il vous plaît."),
    " Missing its input block here.\n4. Output:\nx\n###\n" + block(6, "Wrong number on this block here.")
    + block(6, "Right number on this block here.") + "7. Instruction: Cut off mid",
    " Only one task in this reply.\n4. Input:\n<noinput>\n4. Output:\nDone.",
    "",
]


@pytest.mark.parametrize("text", CRAFTED)
@pytest.mark.parametrize("finish", ["stop", "length"])
def test_post_processing_equals_the_reference(text, finish):
    expected = ref.post_process_gpt3_response(3, {"text": text, "finish_reason": finish})
    ours = [item for _, item, reason in parse_reply(text, 3, finish)
            if not reason and heuristic_verdict(item["instruction"], ALPACA_BLACKLIST)["kept"]]
    assert ours == expected


def test_post_processing_reasons():
    reasons = [r or heuristic_verdict(item["instruction"], ALPACA_BLACKLIST)["reason"] for _, item, r in parse_reply(CRAFTED[0], 3, "stop")]
    assert reasons == ["", "", "blacklisted_word", "", "blacklisted_word", "blacklisted_word", "blacklisted_word", "blacklisted_word"]
    reasons = [r or heuristic_verdict(item["instruction"], ALPACA_BLACKLIST)["reason"] for _, item, r in parse_reply(CRAFTED[2], 3, "length")]
    assert reasons == ["unparseable", "unparseable", "", "truncated"]
    items = [item for _, item, _ in parse_reply(CRAFTED[1], 3, "stop")]
    assert items[0]["input"] == "" and items[1]["input"] == "", "<noinput> in any case means no input"


def test_a_chat_reply_that_restates_the_prompts_last_line_is_read():
    chat = "4. Instruction: Give three tips for staying healthy.\n4. Input:\n<noinput>\n4. Output:\nEat well.\n###\n"
    assert [item for _, item, _ in parse_reply(chat, 3, "stop")] == [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."}]
    assert ref.post_process_gpt3_response(3, {"text": chat, "finish_reason": "stop"}) == [], "the reference drops it"


class CannedOpenAI(FakeOpenAI):
    """The loopback server answering Alpaca prompts in the reference's format, varied by the first shown seed."""

    @staticmethod
    def reply_text(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        assert prompt.startswith("You are asked to come up with a set of 20 diverse task instructions.")
        topic = re.findall(r"1\. Instruction: (\S+)", prompt)[0].lower()
        return (f" Give three tips about {topic} for a beginner.\n4. Input:\n<noinput>\n4. Output:\nStart small.\n###\n"
                + block(5, "Create a flowchart of the hiring process.") + "6. Instruction: Summarize this text.\n6. Output:\nNo input block.\n###\n"
                + block(7, "Convert the temperature from Celsius to Kelvin.", "25 C", "298.15 K")
                + block(8, "Convert the temperature from Celsius to Kelvin.", "30 C", "303.15 K"))


def run_round(server, cache_path, seeds, machine, rng):
    teacher = CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", max_concurrency=1, timeout_s=5.0, max_retries=1,
                                          backoff_s=0.01), TeacherCache(cache_path), Budget())
    novelty = NoveltyFilter(0.7)
    novelty.add([s.instruction for s in seeds])
    return teacher, run_alpaca_round(teacher, seeds, machine, novelty, GenerationConfig(method="alpaca"), 0, 3, rng)


def test_one_round_through_the_openai_protocol(seeds, tmp_path):
    with CannedOpenAI(faults=["length"]) as server:
        machine: list[str] = []
        _, (kept, rejected, stats) = run_round(server, tmp_path / "c.sqlite", seeds, machine, random.Random(5))
        body = server.requests[0]
        sent = len(server.requests)
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"]) == (1.0, 1.0, 3072, list(STOP))
        assert "logit_bias" not in body

        keys = {"id", "round", "method", "task", "instruction", "input", "output", "context", "teacher_model", "requests", "provenance", "filters"}
        assert kept and all(set(r) == keys and r["method"] == "alpaca" and r["task"] == "alpaca" for r in kept)
        assert [r["id"] for r in kept] == [f"r0-{i:05d}" for i in range(len(kept))]
        assert machine == [r["instruction"] for r in kept]
        kelvin = [r for r in kept if "Kelvin" in r["instruction"]]
        assert [(r["input"], r["output"]) for r in kelvin] == [("25 C", "298.15 K")]
        assert all(r["input"] == "" for r in kept if r["instruction"].startswith("Give three tips"))
        for r in kept:
            assert set(r["requests"]) == {"instruction"} and re.fullmatch("[0-9a-f]{64}", r["requests"]["instruction"])
            assert len(r["provenance"]["seed_ids"]) == 3 and len(r["provenance"]["prompt_instructions"]) == 3
            assert [f["filter"] for f in r["filters"]] == ["heuristics", "novelty"] and all(f["kept"] for f in r["filters"])

        reasons = [r["reason"] for r in rejected]
        # One reply cut by length (its only block dropped); four full replies of 5 blocks each.
        assert reasons.count("truncated") == 1 and stats.requests == 1 + 4 * 5
        assert reasons.count("blacklisted_word") == 4 and reasons.count("unparseable") == 4
        # Kept: the first full reply's tips task and Kelvin task; the 10 other tips / Kelvin blocks are too close to them.
        assert len(kept) == 2 and reasons.count("similar_to_pool") == 10
        assert len(kept) + len(rejected) == stats.requests and sum(stats.rejected.values()) == len(rejected)
        assert all({"id", "stage", "reason", "raw", "filters"} <= set(r) and r["raw"] for r in rejected)

        _, (kept2, rejected2, _) = run_round(server, tmp_path / "c.sqlite", seeds, [], random.Random(5))
        assert (kept2, rejected2) == (kept, rejected) and len(server.requests) == sent, "a rerun is served from the cache"
