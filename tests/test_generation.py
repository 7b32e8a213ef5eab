import random

import pytest

from generation.config import DaigConfig, GenerationConfig, TeacherConfig
from generation.data.corpus import Chunk
from generation.methods.daig import directive, parse_answer, parse_instruction, plan_requests, run_daig_round
from generation.filters.rules import answer_problem, instruction_problem, rouge_l
from generation.data.pool import build_pool, load_pool
from generation.teacher.cache import Budget, CachedTeacher
from generation.teacher.backends import LocalTeacher, OpenAITeacher, TeacherError, TeacherRequest

CHUNKS = [Chunk("manual.md#0", "manual.md", "Hold the Mode button for ten seconds to reset the Ferncast controller. The screen flashes blue."),
          Chunk("manual.md#1", "manual.md", "Error E07 means the rain sensor is disconnected. Check the wires at terminals S1 and S2.")]


@pytest.mark.parametrize("raw,expected", [
    ("Task: How do I reset the controller?", "How do I reset the controller?"),
    ("**New task:** What does E07 mean?\n\nExtra commentary.", "What does E07 mean?"),
    ('1. "Summarize the reset steps."', "Summarize the reset steps."),
    ("  \n\nQuestion 3: Which terminals\nhold the sensor wires?", "Which terminals hold the sensor wires?"),
    ("", ""),
    ("Classification task: Classify the error E07.", "Classify the error E07."),
    ("Explain why the FC-200 keeps watering offline. 2. Explain the resistor. 3. Ex", "Explain why the FC-200 keeps watering offline."),
])
def test_parse_instruction(raw, expected):
    assert parse_instruction(raw) == expected


def test_parse_answer_strips_label():
    assert parse_answer("Answer: Hold Mode for ten seconds.") == "Hold Mode for ten seconds."


def test_instruction_filters():
    examples = ["What is the capital of France?"]
    d = directive("question_answering")
    assert instruction_problem("", examples, d, 3, 150, 0.7)[0] == "empty"
    assert instruction_problem("Reset it", examples, d, 3, 150, 0.7)[0] == "too_short"
    assert instruction_problem("word " * 151, examples, d, 3, 150, 0.7)[0] == "too_long"
    reason, score, _ = instruction_problem("What is the capital of France?", examples, d, 3, 150, 0.7)
    assert reason == "copy_of_example" and score == 1.0
    reason, score, _ = instruction_problem("How do I reset the Ferncast controller?", examples, d, 3, 150, 0.7)
    assert reason == "" and score == pytest.approx(rouge_l("How do I reset the Ferncast controller?", examples[0]))
    echo = "Write a new question answering task that a user could ask about the facts in this passage."
    assert instruction_problem(echo, examples, d, 3, 150, 0.7)[0] == "echoes_prompt"
    for meta in ("Write an explanation task about the passage above, in the style of the examples.",
                 "Write a task that asks about the facts in the passage.", "Rewrite the task to ask a user about the facts in the passage."):
        assert instruction_problem(meta, examples, d, 3, 150, 0.7)[0] == "echoes_prompt", meta
    assert instruction_problem("List the maintenance tasks for spring start-up.", examples, d, 3, 150, 0.7)[0] == ""
    assert answer_problem("cut", "length", 100) == "answer_truncated"
    assert answer_problem(" ... ", "stop", 100) == "empty_answer"
    assert answer_problem("fine answer", "stop", 100) == ""


def test_request_key_depends_on_what_changes_the_output_only():
    r = TeacherRequest((("user", "hi"),), 10, 0.7, 0.9, 1)
    assert r.key("m") == TeacherRequest((("user", "hi"),), 10, 0.7, 0.9, 1).key("m")
    assert len({r.key("m"), r.key("other"), TeacherRequest((("user", "hi"),), 10, 0.7, 0.9, 2).key("m")}) == 3


def _plan(n=6, seed=0):
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=n))
    pool = build_pool(load_pool("builtin", "general"), [], [])
    weights = {t: 1 / len(pool) for t in pool}
    return cfg, plan_requests(weights, pool, CHUNKS, cfg, random.Random(seed))


def test_daig_round_with_real_local_model_accounts_for_every_request(tiny_model):
    """The tiny random model writes garbage: every request must still end as a kept or rejected row."""
    cfg, plan = _plan()
    teacher = CachedTeacher(LocalTeacher(tiny_model, "tiny", batch_size=4, num_threads=1), None, Budget())
    kept, rejected, stats = run_daig_round(teacher, plan, cfg, round_idx=1, seed=0)
    assert len(kept) + len(rejected) == len(plan) == stats.requests
    assert sum(stats.rejected.values()) == len(rejected)
    assert teacher.ledger.calls == len(plan) + len(kept) + sum(r["stage"] == "answer" for r in rejected)
    assert teacher.ledger.completion_tokens > 0 and teacher.ledger.prompt_tokens > 0
    for row in rejected:
        assert row["reason"] and "raw" in row and row["provenance"]["chunk_id"] in {c.id for c in CHUNKS}


def test_local_teacher_batching_does_not_change_greedy_output(tiny_model):
    reqs = [TeacherRequest((("user", f"Write one new task about item {i} " + "x " * i),), 8, 0.0, 1.0, 0) for i in range(5)]
    one = LocalTeacher(tiny_model, "tiny", batch_size=1, num_threads=1).generate(reqs)
    many = LocalTeacher(tiny_model, "tiny", batch_size=5, num_threads=1).generate(reqs)
    assert [r.text for r in one] == [r.text for r in many]
    assert all(r.finish_reason in ("stop", "length") and r.prompt_tokens > 0 for r in many)


def test_daig_round_over_openai_protocol_keeps_rows_with_provenance(fake_openai, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-123")
    cfg, plan = _plan(n=5)
    inner = OpenAITeacher("fake-teacher", fake_openai.base_url, "TEST_TEACHER_KEY", max_concurrency=3, timeout_s=10, max_retries=0)
    inner.check_reachable()
    teacher = CachedTeacher(inner, None, Budget())
    kept, rejected, stats = run_daig_round(teacher, plan, cfg, round_idx=2, seed=7)
    assert len(kept) == 5 and not rejected
    row = kept[0]
    assert row["round"] == 2 and row["provenance"]["chunk_id"] in {c.id for c in CHUNKS} and len(row["provenance"]["example_ids"]) == 3
    assert row["instruction"].startswith("What does the passage say about") and row["output"]
    assert set(row["requests"]) == {"instruction", "answer"} and all(len(k) == 64 for k in row["requests"].values())
    assert row["teacher_model"] == "fake-teacher"
    assert teacher.ledger.calls == 10 == len(fake_openai.requests)
    assert set(fake_openai.auth_headers) == {"Bearer sk-test-123"}
    sent = fake_openai.requests[0]
    assert sent["model"] == "fake-teacher" and sent["temperature"] == cfg.daig.temperature and sent["seed"] is not None


def test_faults_become_counted_rejections(fake_openai, monkeypatch):
    monkeypatch.setenv("K", "x")
    fake_openai.faults = ["401", "garbage", "empty", "length"]  # replies that came back bad (a 5xx is retried, never a row)
    cfg, plan = _plan(n=4)
    teacher = OpenAITeacher("fake-teacher", fake_openai.base_url, "K", max_concurrency=1, timeout_s=10, max_retries=0)
    kept, rejected, stats = run_daig_round(teacher, plan, cfg, round_idx=1, seed=0)
    # Three instruction requests fail; the fourth is cut by length but an instruction is still parseable.
    assert stats.rejected.get("teacher_http_401") == 1
    assert stats.rejected.get("teacher_malformed_reply") == 2
    assert len(kept) + len(rejected) == 4


def test_missing_key_and_unreachable_endpoint_fail_clearly(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(TeacherError, match="NO_SUCH_KEY_VAR is not set.*api_key_env"):
        OpenAITeacher("m", "http://127.0.0.1:9/v1", "NO_SUCH_KEY_VAR", 1, 1.0, 0)
    teacher = OpenAITeacher("m", "http://127.0.0.1:9/v1", "", 1, 2.0, 0)
    with pytest.raises(TeacherError, match=r"cannot reach the teacher endpoint http://127.0.0.1:9/v1.*base_url"):
        teacher.check_reachable()


def test_teacher_and_daig_config_validation():
    from loop.config import build

    with pytest.raises(ValueError, match="model: empty"):
        TeacherConfig(model="")
    with pytest.raises(ValueError, match=r"top_p: must be in \(0, 1\], got 0"):
        build(DaigConfig, {"top_p": 0.0})


def test_local_teacher_stop_sequences_cut_the_reply_as_openai_does(tiny_model):
    teacher = LocalTeacher(tiny_model, "tiny", batch_size=2, num_threads=1)
    base = TeacherRequest((("user", "Summarize the passage."),), 24, 0.0, 1.0, 0)
    (full,) = teacher.generate([base])
    assert len(full.text) > 6, "the tiny model should write something to cut"
    stop = full.text[3:6]
    first = full.text.find(stop)
    (cut,) = teacher.generate([TeacherRequest(base.messages, 24, 0.0, 1.0, 0, stop=(stop, "never-seen-zzz"))])
    assert cut.text == full.text[:first] and cut.finish_reason == "stop"
    assert cut.completion_tokens <= full.completion_tokens


def test_presence_penalty_never_repeats_a_generated_token(tiny_model):
    import torch
    from transformers import LogitsProcessorList

    from generation.teacher.backends import PresencePenalty

    out = PresencePenalty(2.0, prompt_len=2)(torch.tensor([[4, 1, 3, 3, 0]]), torch.zeros(1, 5))
    assert out.tolist() == [[-2.0, 0.0, 0.0, -2.0, 0.0]]  # prompt tokens (4, 1) are not penalised; 3 once despite twice
    teacher = LocalTeacher(tiny_model, "tiny", batch_size=2, num_threads=1)
    msgs = (("user", "Extract every number."),)
    plain, penalised = teacher.generate([TeacherRequest(msgs, 40, 0.0, 1.0, 0), TeacherRequest(msgs, 40, 0.0, 1.0, 0, presence_penalty=1e4)])
    assert plain.text != penalised.text
    # The same processor inside transformers' generate: greedy ids repeat without it, never with it.
    enc = teacher.tok(["Extract every number."], return_tensors="pt")
    n = enc.input_ids.shape[1]
    free = teacher.lm.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=teacher.tok.pad_token_id)[0, n:].tolist()
    held = teacher.lm.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=teacher.tok.pad_token_id,
                               logits_processor=LogitsProcessorList([PresencePenalty(1e4, n)]))[0, n:].tolist()
    assert len(free) > len(set(free)) and len(held) == len(set(held))


def test_stop_and_presence_penalty_reach_the_openai_endpoint_and_the_cache_key(fake_openai):
    plain = TeacherRequest((("user", "hi"),), 8, 0.7, 0.5, 1)
    assert plain.key("m") == TeacherRequest((("user", "hi"),), 8, 0.7, 0.5, 1, stop=(), presence_penalty=0.0).key("m")
    full = TeacherRequest((("user", "hi"),), 8, 0.7, 0.5, 1, stop=("\n\n", "16."), presence_penalty=2.0)
    assert full.key("m") != plain.key("m")
    OpenAITeacher("fake-teacher", fake_openai.base_url, "", 1, 10, 0).generate([full, plain])
    sent = sorted(fake_openai.requests, key=lambda b: "stop" in b)
    assert "stop" not in sent[0] and "presence_penalty" not in sent[0]
    assert sent[1]["stop"] == ["\n\n", "16."] and sent[1]["presence_penalty"] == 2.0


def test_under_covered_chunk_sampling_favours_chunks_that_produced_nothing():
    pool = build_pool(load_pool("builtin", "general"), [], [])
    weights = {t: 1 / len(pool) for t in pool}
    chunks = [Chunk(f"c{i}", "doc.md", f"text {i}") for i in range(4)]
    counts = {"c0": 20, "c1": 20, "c2": 20}  # c3 never produced a kept row
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=400, chunk_sampling="under_covered"))
    picked = [c.id for _, _, c in plan_requests(weights, pool, chunks, cfg, random.Random(0), counts)]
    assert picked.count("c3") > 0.8 * len(picked)  # weight 1 vs 1/21 each: about 88%
    uniform = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=400))
    picked = [c.id for _, _, c in plan_requests(weights, pool, chunks, uniform, random.Random(0), counts)]
    assert 0.15 < picked.count("c3") / len(picked) < 0.35
    from loop.config import build

    with pytest.raises(ValueError, match="chunk_sampling: 'rare_first' is not one of"):
        build(DaigConfig, {"chunk_sampling": "rare_first"})


def test_local_sampling_depends_only_on_each_request_not_on_its_batch(tiny_model):
    """A resumed run re-batches the requests not yet cached: a sampled reply must not change with its batch."""
    reqs = [TeacherRequest((("user", f"Write one new task about item {i} " + "x " * i),), 12, 1.0, 0.9, 100 + i) for i in range(4)]
    alone = LocalTeacher(tiny_model, "tiny", batch_size=1, num_threads=1).generate(reqs)
    together = LocalTeacher(tiny_model, "tiny", batch_size=4, num_threads=1).generate(reqs)
    subset = LocalTeacher(tiny_model, "tiny", batch_size=4, num_threads=1).generate(reqs[2:])
    assert [r.text for r in alone] == [r.text for r in together] and [r.text for r in subset] == [r.text for r in together[2:]]
    reseeded = LocalTeacher(tiny_model, "tiny", batch_size=4, num_threads=1).generate(
        [TeacherRequest(r.messages, r.max_tokens, r.temperature, r.top_p, r.seed + 7) for r in reqs])
    assert [r.text for r in reseeded] != [r.text for r in together]  # the seed does drive the sample


def test_daig_json_replies_ask_for_json_and_read_it_falling_back_to_the_text_parser(fake_openai):
    """generation.daig.json_replies: the request carries response_format json_object and a directive naming JSON;
    the server's JSON reply is read by json.loads; a prose reply from a teacher that ignores JSON mode still parses."""
    import json

    from generation.methods.daig import parse_task, parse_task_json

    cfg, plan = _plan(n=4)
    cfg.daig.json_replies = True
    teacher = CachedTeacher(OpenAITeacher("fake-teacher", fake_openai.base_url, "", max_concurrency=2, timeout_s=10, max_retries=0), None, Budget())
    kept, rejected, _ = run_daig_round(teacher, plan, cfg, round_idx=1, seed=0)
    asked = [b for b in fake_openai.requests if "JSON object" in b["messages"][-1]["content"]]
    assert len(asked) == 4 and all(b["response_format"] == {"type": "json_object"} for b in asked)
    assert all("response_format" not in b for b in fake_openai.requests if b not in asked)  # the answers stay text
    assert len(kept) == 4 and all(r["provenance"]["reply_format"] == "json" for r in kept)
    assert all(r["instruction"].startswith(("What does the passage say about", "Classify")) for r in kept)
    # the key changes with JSON mode; a default request's does not
    plain = TeacherRequest((("user", "hi"),), 8, 0.7, 0.5, 1)
    assert plain.key("m") != TeacherRequest((("user", "hi"),), 8, 0.7, 0.5, 1, json_object=True).key("m")
    assert parse_task_json('```json\n{"instruction": "List the  zones.", "input": "A, B"}\n```') == ("List the zones.", "A, B")
    assert parse_task_json(json.dumps({"instruction": "Sort these.", "input": [3, 1]})) == ("Sort these.", "[3, 1]")
    for prose in ("Task: List the zones.", '{"task": "no instruction key"}', '["a list"]', '{"instruction": ""}'):
        assert parse_task_json(prose) is None
    assert parse_task("Task: List the zones.")[0] == "List the zones."
    assert directive("question_answering", None, True).endswith('{"instruction": "<the task>", "input": "<the text the task works on, or an empty string>"}')
