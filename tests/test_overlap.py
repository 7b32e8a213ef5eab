"""Overlapped stages (issue 16): a DAIG row's answer goes out while other instructions are still out, with the same
rows, rejections and seeds as the stage-by-stage round; concurrent generate() calls share one concurrency limit and
never cross a cap together. Counted at the loopback server.

Run: pytest tests/test_overlap.py -q
"""
import hashlib
import random

import pytest
import threading
import time

from openai_server import FakeOpenAI

from generation.config import DaigConfig, GenerationConfig, NoveltyConfig
from generation.data.corpus import Chunk
from generation.data.pool import build_pool, load_pool
from generation.filters.rules import NoveltyFilter
from generation.methods.daig import plan_requests, run_daig_round
from generation.teacher.backends import OpenAITeacher, TeacherRequest
from generation.teacher.cache import Budget, CachedTeacher

CHUNKS = [Chunk(f"manual.md#{i}", "manual.md", text) for i, text in enumerate([
    "Hold the Mode button for ten seconds to reset the Ferncast controller. The screen flashes blue.",
    "Error E07 means the rain sensor is disconnected. Check the wires at terminals S1 and S2.",
    "Each irrigation zone runs for its programmed minutes, then the valve closes and the next zone starts.",
    "The pump relay engages two seconds before the first valve opens, so pressure builds before watering.",
])]


def plan(n, novelty_filter="strict"):
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=n), novelty=NoveltyConfig(filter=novelty_filter))
    pool = build_pool(load_pool("builtin", "general"), [], [])
    return cfg, pool, plan_requests({t: 1 / len(pool) for t in pool}, pool, CHUNKS, cfg, random.Random(3))


def kind(body) -> str:
    return "answer" if body["messages"][0]["role"] == "system" else "instruction"


def jitter(server, seen: list):
    """Each reply waits 0-60 ms, drawn from its body: a seeded stream, arriving out of order. seen gets (kind,
    received, replied) per request."""
    def hook(n, body):
        start = time.monotonic()
        time.sleep(int(hashlib.sha256(str(body).encode()).hexdigest()[:4], 16) % 60 / 1000)
        seen.append((kind(body), start, time.monotonic()))
        return False
    server.before_reply = hook


def round_rows(server, cfg, pool, the_plan, overlap):
    cfg.daig.overlap_stages = overlap
    teacher = CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", 6, 10.0, 0), None, Budget())
    novelty = NoveltyFilter(cfg.novelty.threshold, cfg.novelty.no_token_text)
    novelty.add([item.instruction for items in pool.values() for item in items])
    kept, rejected, stats = run_daig_round(teacher, the_plan, cfg, round_idx=1, seed=5, novelty=novelty, tasks=tuple(pool))
    return kept, rejected, stats, novelty.texts, teacher.ledger


def test_overlapped_and_stage_by_stage_rounds_keep_identical_rows():
    cfg, pool, the_plan = plan(30)
    seen = []
    with FakeOpenAI() as server:
        jitter(server, seen)
        seq = round_rows(server, cfg, pool, the_plan, overlap=False)
        n_seq, seen[:] = len(server.requests), []
        over = round_rows(server, cfg, pool, the_plan, overlap=True)
    kept, rejected, stats, pool_after, ledger = over
    assert kept == seq[0] and rejected == seq[1] and stats == seq[2] and pool_after == seq[3]
    assert ledger.calls == seq[4].calls == n_seq == len(seen)
    assert len(kept) >= 5 and any(r["stage"] == "novelty" for r in rejected) and any(r["stage"] == "instruction" for r in rejected), \
        "the plan exercises both filters"
    first_answer = min(t for k, t, _ in seen if k == "answer")
    assert first_answer < max(t for k, _, t in seen if k == "instruction"), "an answer went out before the last instruction came back"


def test_sedi_rounds_go_stage_by_stage():
    cfg, pool, the_plan = plan(12, novelty_filter="sedi")
    with FakeOpenAI() as server:
        round_rows(server, cfg, pool, the_plan, overlap=True)
        order = [kind(b) for b in server.requests]
    assert order == sorted(order, key=lambda x: x == "answer"), "every instruction before any answer"


def test_concurrent_calls_share_the_concurrency_limit_and_never_cross_a_cap():
    with FakeOpenAI() as server:
        server.latency_s = 0.05
        in_flight, peak, lock = [0], [0], threading.Lock()

        def count(n, body):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.05)
            with lock:
                in_flight[0] -= 1
            return False
        server.before_reply = count
        teacher = CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", 4, 10.0, 0), None, Budget(max_calls=30))
        results = {}

        def call(tag):
            results[tag] = teacher.generate([TeacherRequest((("user", f"{tag} {i}"),), 8, 0.7, 0.9, i) for i in range(20)])
        threads = [threading.Thread(target=call, args=(t,)) for t in ("a", "b", "c")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert peak[0] <= 4, "three calls at once still hold max_concurrency in flight"
    assert not teacher.concurrent, "a capped budget admits pass by pass: its rounds go stage by stage"
    assert len(server.requests) == teacher.ledger.calls == 30, "the call cap holds across concurrent calls"
    assert sum(r.error == "budget_exhausted" for rs in results.values() for r in rs) == 30


def test_an_interrupt_mid_round_stops_both_stages_at_once():
    """Ctrl-C lands in the thread that reads the replies: the calls in flight in other threads stop too."""
    from generation.methods.daig import overlapped

    with FakeOpenAI() as server:
        server.latency_s = 0.2
        teacher = CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", 2, 10.0, 0), None, Budget())
        first = [TeacherRequest((("user", f"instruction {i}"),), 8, 0.7, 0.9, i) for i in range(40)]

        def admit(i, reply):
            if i == 3:
                raise KeyboardInterrupt
            return [i]
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            overlapped(teacher, first, "instructions", admit, lambda n, i: TeacherRequest((("user", f"answer {i}"),), 8, 0.7, 0.9, n), "answers")
        assert time.monotonic() - start < 2.0, "stopped within a few requests' latency, not after 40"
        time.sleep(0.5)
        assert len(server.requests) < 12


@pytest.mark.parametrize("judge", ["none", "both"])
def test_a_round_in_windows_keeps_the_rows_of_one_window(judge):
    cfg, pool, the_plan = plan(30)
    cfg.grounding.judge = judge  # the judges' seeds continue across windows too
    with FakeOpenAI() as server:
        whole = round_rows(server, cfg, pool, the_plan, overlap=True)
        cfg.daig.window = 7
        windows = round_rows(server, cfg, pool, the_plan, overlap=True)
        cfg.daig.overlap_stages = False
        staged = round_rows(server, cfg, pool, the_plan, overlap=False)
    for w in (windows, staged):
        assert w[0] == whole[0] and w[2] == whole[2] and w[3] == whole[3], "kept rows, stats and novelty pool"
        assert sorted(w[1], key=lambda r: r["id"]) == sorted(whole[1], key=lambda r: r["id"]), "the same rejected rows"
