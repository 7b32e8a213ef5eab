"""The teacher layer against the loopback OpenAI-protocol server: retries, fault accounting, cache,
budget caps, rate limits, secrets."""
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from generation.teacher.cache import BUDGET_EXHAUSTED, Budget, CachedTeacher, TeacherCache
from generation.teacher.backends import OpenAITeacher, RateLimiter, TeacherReply, TeacherRequest, retry_after


def requests(n, tag="q"):
    return [TeacherRequest((("user", f'Passage:\n"""\nThe {tag} number {i} is here. It matters.\n"""\nAnswer it.'),), 32, 0.7, 0.9, i)
            for i in range(n)]


def teacher(server, cache=None, budget=None, **kw):
    kw = {"max_concurrency": 4, "timeout_s": 1.0, "max_retries": 3, "backoff_s": 0.01, **kw}
    return CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", **kw), cache, budget or Budget())


def test_transient_faults_are_retried_and_counted(fake_openai):
    fake_openai.faults = ["429", "500", "drop", "timeout", "500"]
    t = teacher(fake_openai, max_concurrency=1, max_retries=5)
    replies = t.generate(requests(6))
    assert all(not r.error and r.text for r in replies), [r.error for r in replies]
    assert t.ledger.retries == 5 and t.ledger.calls == 6 and not t.ledger.failures
    assert len(fake_openai.requests) == 11  # 6 successes + 5 injected faults


def test_final_failures_and_bad_replies_are_counted_by_reason(fake_openai):
    """Replies that came back and were bad are counted by reason; transport errors are retried, counted by reason."""
    fake_openai.faults = ["500", "429", "401", "garbage", "empty", "length"]
    t = teacher(fake_openai, max_concurrency=1, max_retries=2)
    replies = t.generate(requests(5))
    errors = [r.error for r in replies]
    assert errors == ["http_401", "malformed_reply", "malformed_reply", "", ""]
    assert replies[3].finish_reason == "length" and replies[4].text
    assert t.ledger.failures == {"http_401": 1, "malformed_reply": 2}
    assert t.ledger.retries == 2 and t.ledger.retry_reasons == {"http_500": 1, "http_429": 1}  # 401 is not retried
    assert len(fake_openai.requests) == 7 == t.ledger.calls + t.ledger.retries


def test_a_request_that_fails_every_attempt_is_an_error_not_a_row(fake_openai):
    from generation.teacher.backends import TeacherUnavailable

    fake_openai.faults = ["500", "500"]
    t = teacher(fake_openai, max_concurrency=1, max_retries=1)
    with pytest.raises(TeacherUnavailable, match=r"1 of 3 teacher requests failed after 2 attempts each \(http_500 x1\)"):
        t.generate(requests(3))
    assert t.ledger.failures == {"http_500": 1} and t.ledger.calls == 3 and len(fake_openai.requests) == 4


def test_retry_after_header_parsing():
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "soon"}) == 0.0 and retry_after({}) == 0.0
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after({"retry-after": http_date}) <= 31


def test_same_requests_twice_cost_nothing_the_second_time(fake_openai, tmp_path):
    cache = TeacherCache(tmp_path / "c.sqlite")
    first = teacher(fake_openai, cache)
    a = first.generate(requests(8))
    assert len(fake_openai.requests) == 8 and first.ledger.cache_hits == 0
    second = teacher(fake_openai, TeacherCache(tmp_path / "c.sqlite"))  # a new run sharing the file
    b = second.generate(requests(8))
    assert len(fake_openai.requests) == 8, "no request reaches the server on a warm cache"
    assert second.ledger.cache_hits == 8 and second.ledger.calls == 0 and second.ledger.prompt_tokens == 0
    assert [r.text for r in a] == [r.text for r in b] and all(r.cached for r in b)
    # Identical requests inside one call are sent once.
    third = teacher(fake_openai, None)
    dup = requests(1, "dup") * 3
    third.generate(dup)
    assert len(fake_openai.requests) == 9 and third.ledger.calls == 1


def test_failures_are_not_cached(fake_openai, tmp_path):
    fake_openai.faults = ["401"]
    t = teacher(fake_openai, TeacherCache(tmp_path / "c.sqlite"), max_concurrency=1)
    assert t.generate(requests(1))[0].error == "http_401"
    assert t.generate(requests(1))[0].text, "the failed request is sent again, not served from the cache"


WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
from generation.teacher.cache import TeacherCache
from generation.teacher.backends import TeacherReply
c = TeacherCache({path!r})
for i in range({n}):
    c.put(f"{tag}-{{i}}", "m", TeacherReply("x" * 200 + str(i), "stop", 10, 20))
print("done", flush=True)
"""


def _writer(tmp_path, tag, n):
    from conftest import REPO

    code = WRITER.format(repo=str(REPO), path=str(tmp_path / "c.sqlite"), n=n, tag=tag)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_concurrent_writers_lose_nothing(tmp_path):
    procs = [_writer(tmp_path, tag, 300) for tag in ("a", "b", "c")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(TeacherCache(tmp_path / "c.sqlite")) == 900


OPENER = """
import sys, time
sys.path.insert(0, {repo!r})
from generation.teacher.cache import TeacherCache
while time.time() < {start}:
    pass
TeacherCache({path!r}).check_writable()
"""


@pytest.mark.parametrize("schema", ["new", "old"])
def test_processes_opening_one_cache_at_the_same_instant_all_start(tmp_path, schema):
    # CI once lost a run to this race: switching a new file to WAL said "database is locked" at once, and two
    # openers of a pre-cost_usd cache both tried the ALTER. Six openers released together, several times over.
    from conftest import REPO

    for trial in range(4):
        path = tmp_path / f"c{trial}.sqlite"
        if schema == "old":
            old = sqlite3.connect(path)
            old.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, created REAL)")
            old.commit()
            old.close()
        code = OPENER.format(repo=str(REPO), path=str(path), start=time.time() + 1.0)
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(6)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [e[-400:] for e in errors if e]
        columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(replies)")]
        assert columns == ["key", "model", "reply", "created", "cost_usd"]


def test_kill_while_writing_leaves_a_usable_cache(tmp_path):
    proc = _writer(tmp_path, "k", 200000)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = TeacherCache(tmp_path / "c.sqlite")
    n = len(cache)
    assert n > 0
    got = cache.get_many([f"k-{i}" for i in range(n)])
    assert len(got) == n and all(r.text.startswith("x" * 200) for r in got.values())
    cache.put("after", "m", TeacherReply("fine", "stop"))
    assert len(cache) == n + 1


@pytest.mark.parametrize("cap", ["calls", "tokens", "cost"])
def test_budget_caps_stop_cleanly_and_are_never_crossed(fake_openai, cap):
    reqs = requests(40)
    worst = sum(len(c.encode()) + 16 for _, c in reqs[0].messages) + reqs[0].max_tokens
    budget = {"calls": Budget(max_calls=4),
              "tokens": Budget(max_tokens=4 * worst),
              "cost": Budget(max_cost_usd=4 * worst / 1e6, usd_per_m_prompt=1.0, usd_per_m_completion=1.0)}[cap]
    t = teacher(fake_openai, None, budget)
    replies = t.generate(reqs)
    sent = len(fake_openai.requests)
    assert t.ledger.calls == sent and [r.error for r in replies].count(BUDGET_EXHAUSTED) == 40 - sent > 0
    assert t.exhausted == {"calls": "max_teacher_calls", "tokens": "max_teacher_tokens", "cost": "max_cost_usd"}[cap]
    used = t.ledger.prompt_tokens + t.ledger.completion_tokens
    if cap == "calls":
        assert sent == 4
    if cap == "tokens":  # admitted on the worst case, so the cap holds; stops once one more might cross it
        assert used <= budget.max_tokens < used + worst and sent > 4
    if cap == "cost":
        assert t.ledger.cost_usd <= budget.max_cost_usd < t.ledger.cost_usd + worst / 1e6 and sent > 4
    assert t.generate(requests(2, "more"))[0].error == BUDGET_EXHAUSTED and len(fake_openai.requests) == sent


def test_rate_limiter_spaces_requests():
    async def go():
        limiter = RateLimiter(rpm=2, tpm=0, window_s=0.5)
        start = time.monotonic()
        for _ in range(4):
            await limiter.acquire(10)
        return time.monotonic() - start
    assert asyncio.run(go()) >= 0.5  # the third request waits for the first to leave the window


def test_api_key_never_reaches_outputs_or_errors(fake_openai, tmp_path, monkeypatch):
    key = "sk-planted-" + "Z" * 40
    monkeypatch.setenv("PLANTED_KEY", key)
    fake_openai.faults = ["401", "garbage"]
    inner = OpenAITeacher("fake-teacher", fake_openai.base_url, "PLANTED_KEY", 1, 1.0, 0)
    t = CachedTeacher(inner, TeacherCache(tmp_path / "c.sqlite"), Budget())
    replies = t.generate(requests(3))
    assert fake_openai.auth_headers[0] == f"Bearer {key}", "the key is sent to the endpoint"
    assert key not in json.dumps([r.__dict__ for r in replies]) and key not in repr(t.ledger) and key not in repr(inner.__dict__.get("model"))
    t.close()
    for f in tmp_path.rglob("*"):
        assert key.encode() not in f.read_bytes()


def test_vllm_config_drives_a_round_over_the_openai_protocol(fake_openai, tmp_path):
    """configs/vllm_teacher.yaml as shipped, with only the endpoint moved to the loopback server."""
    import random

    from conftest import REPO

    from generation.data.corpus import load_corpus
    from generation.methods.daig import plan_requests, run_daig_round
    from generation.data.pool import build_pool, load_pool
    from loop.config import load_config
    from loop.controller import make_teacher

    cfg = load_config(REPO / "configs" / "vllm_teacher.yaml", [f"generation.teacher.base_url={fake_openai.base_url}",
                                                              f"generation.teacher.cache_path={tmp_path / 'c.sqlite'}",
                                                              "generation.daig.examples_per_round=6"])
    g = cfg.generation
    assert g.teacher.backend == "openai" and g.teacher.api_key_env == ""
    teacher = make_teacher(cfg)
    pool = build_pool(load_pool(g.general_pool, "general"), load_pool(g.domain_pool, "domain"), [])
    plan = plan_requests({t: 1 / len(pool) for t in pool}, pool, load_corpus(g.domain_path, g.chunk_words), g, random.Random(0))
    kept, rejected, _ = run_daig_round(teacher, plan, g, 1, 0)
    assert len(kept) + len(rejected) == 6 and kept
    assert {r["model"] for r in fake_openai.requests} == {"Qwen/Qwen2.5-7B-Instruct"}
    assert fake_openai.requests[0]["max_tokens"] == 128


def _round_inputs(n):
    import random

    from generation.config import DaigConfig, GenerationConfig
    from generation.data.corpus import Chunk
    from generation.methods.daig import plan_requests
    from generation.data.pool import build_pool, load_pool

    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=n))
    pool = build_pool(load_pool("builtin", "general"), [], [])
    chunks = [Chunk(f"c#{i}", "c", f"The Ferncast controller number {i} waters eight zones and resets in ten seconds.") for i in range(3)]
    return cfg, plan_requests({t: 1 / len(pool) for t in pool}, pool, chunks, cfg, random.Random(0))


def test_round_survives_every_injected_fault_and_loses_nothing(fake_openai):
    from generation.methods.daig import run_daig_round

    faults = ["429", "500", "timeout", "drop", "garbage", "empty", "500", "429"]
    fake_openai.faults = list(faults)
    cfg, plan = _round_inputs(8)
    t = teacher(fake_openai, max_concurrency=3, max_retries=4)
    kept, rejected, stats = run_daig_round(t, plan, cfg, 1, 0)
    # Transient faults (429, 500, timeout, drop) are retried; garbage and empty bodies are final, counted by reason.
    assert len(kept) == 6 and [r["reason"] for r in rejected] == ["teacher_malformed_reply"] * 2
    assert stats.rejected == {"teacher_malformed_reply": 2} and t.ledger.failures == {"malformed_reply": 2}
    assert t.ledger.retries == 6
    assert len(fake_openai.requests) == 8 + 6 + 6  # instructions + answers for the kept + one per retried fault


def test_same_round_twice_makes_zero_requests_the_second_time(fake_openai, tmp_path):
    from generation.methods.daig import run_daig_round

    cfg, plan = _round_inputs(6)
    first = teacher(fake_openai, TeacherCache(tmp_path / "c.sqlite"))
    kept1, _, _ = run_daig_round(first, plan, cfg, 1, 0)
    sent = len(fake_openai.requests)
    second = teacher(fake_openai, TeacherCache(tmp_path / "c.sqlite"))
    kept2, _, _ = run_daig_round(second, plan, cfg, 1, 0)
    assert len(fake_openai.requests) == sent and second.ledger.calls == 0 and second.ledger.cache_hits == sent
    assert [(r["instruction"], r["output"]) for r in kept1] == [(r["instruction"], r["output"]) for r in kept2]


def test_claims_of_a_dead_or_lapsed_owner_are_taken_over_and_live_ones_are_renewed(tmp_path):
    """Runs sharing a cache claim a request before sending it; a claim holds only while its owner lives."""
    import socket

    cache = TeacherCache(tmp_path / "c.sqlite", lease_s=0.3)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now, here = time.time(), socket.gethostname()
    cache._db.executemany("INSERT INTO claims VALUES (?, ?, ?, ?, ?)", [
        ("dead-pid", "other", here, gone.pid, now + 60),  # its process is gone: free at once
        ("lapsed", "other", "another-host", 1, now - 1),  # its lease ran out: free
        ("held-there", "other", "another-host", 1, now + 60),  # alive elsewhere: wait for it
        ("held-here", "other", here, os.getpid(), now + 60)])  # a live process on this host: wait for it
    mine, theirs, answered = cache.claim(["dead-pid", "lapsed", "held-there", "held-here", "new"])
    assert sorted(mine) == ["dead-pid", "lapsed", "new"] and sorted(theirs) == ["held-here", "held-there"] and not answered
    time.sleep(0.6)  # past the lease: ours were renewed, so another process still sees them held
    other = TeacherCache(tmp_path / "c.sqlite")
    assert other.claim(["new"])[1] == ["new"] and not other.claimable("new")
    cache.close()  # a clean exit releases them
    assert other.claimable("new") and other.claim(["new"])[0] == ["new"]
    other.close()


def test_the_endpoint_check_names_a_model_the_endpoint_does_not_serve(fake_openai):
    from generation.teacher.backends import TeacherError, check_endpoint

    check_endpoint(fake_openai.base_url, "k", 5.0, "fake-teacher")  # listed: fine
    with pytest.raises(TeacherError, match=r"generation.teacher.model='other-model' is not served by .* \(it serves fake-teacher\)"):
        check_endpoint(fake_openai.base_url, "k", 5.0, "other-model")
    with pytest.raises(TeacherError, match="cannot reach the teacher endpoint"):
        check_endpoint("http://127.0.0.1:9/v1", "k", 1.0)
