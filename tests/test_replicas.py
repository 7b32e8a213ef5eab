"""Several replicas behind one teacher (issue 16): requests are spread by fewest outstanding, a replica that fails is
taken out and brought back, a killed one costs no row and no double payment, and the cache does not care which
replica answered. Counted at loopback servers, each in its own process where a kill is the point.

Run: pytest tests/test_replicas.py -q
"""
import logging
import threading
import time

import pytest

from openai_server import FakeOpenAI, ServerProcess, body_key

from generation.config import TeacherConfig
from generation.teacher.backends import OpenAITeacher, TeacherError, TeacherRequest, TeacherUnavailable
from generation.teacher.cache import Budget, CachedTeacher, TeacherCache

LOGGER = "generation.teacher.backends"


def requests(n):
    return [TeacherRequest((("user", f'Passage:\n"""\nThe part number {i} is here. It matters.\n"""\nAnswer it.'),), 32, 0.7, 0.9, i)
            for i in range(n)]


def teacher(urls, **kw):
    kw = {"max_concurrency": 8, "timeout_s": 5.0, "max_retries": 3, "backoff_s": 0.05, "max_backoff_s": 0.4, "outage_failures": 3, **kw}
    return OpenAITeacher("fake-teacher", urls, "", **kw)


def answered_keys(*servers):
    return [e["key"] for s in servers for e in s.events("answered")]


def test_requests_are_spread_over_replicas_and_the_cache_ignores_which_answered(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a, b = ServerProcess(tmp_path / "a", latency_s=0.05), ServerProcess(tmp_path / "b", latency_s=0.05)
    try:
        cache = TeacherCache(tmp_path / "cache.sqlite")
        replies = CachedTeacher(teacher([a.base_url, b.base_url]), cache, Budget()).generate(requests(40))
        assert all(not r.error for r in replies)
        at_a, at_b = len(a.events("answered")), len(b.events("answered"))
        assert at_a + at_b == 40 and min(at_a, at_b) >= 15, (at_a, at_b)  # fewest outstanding: about half each
        assert sorted(answered_keys(a, b)) == sorted(set(answered_keys(a, b)))  # none paid twice
        again = CachedTeacher(teacher(a.base_url), cache, Budget()).generate(requests(40))  # one replica now: all cached
        assert all(r.cached for r in again) and [r.text for r in again] == [r.text for r in replies]
        assert len(answered_keys(a, b)) == 40
    finally:
        a.stop(), b.stop()


def test_a_replica_killed_mid_round_costs_no_row_and_no_double_payment(tmp_path, caplog):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a, b = ServerProcess(tmp_path / "a", latency_s=0.1), ServerProcess(tmp_path / "b", latency_s=0.1)
    killed = threading.Event()

    def kill_b_after_some():
        while len(b.events("received")) < 8:
            time.sleep(0.01)
        b.stop()
        killed.set()
    threading.Thread(target=kill_b_after_some, daemon=True).start()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            replies = teacher([a.base_url, b.base_url]).generate(requests(80))
        assert killed.is_set() and all(not r.error and r.text for r in replies)
        keys = answered_keys(a, b)
        assert len(keys) == 80 and len(set(keys)) == 80, "every request answered exactly once across the replicas"
        assert 8 <= len(b.events("received")) < 40 and len(a.events("answered")) > 40
        lost = {e["key"] for e in b.events("received")} - {e["key"] for e in b.events("answered")}
        assert lost and lost <= {e["key"] for e in a.events("answered")}, "requests in flight at the kill went to the live replica"
        assert any(f"teacher endpoint {b.base_url} is failing" in r.getMessage() for r in caplog.records)
        assert max(r.attempts for r in replies) >= 2
    finally:
        a.stop(), b.stop()


def test_a_failing_replica_is_taken_out_then_brought_back():
    with FakeOpenAI() as a, FakeOpenAI() as b:
        b.faults = ["500"] * 3  # three in a row: b is out for backoff_s
        a.latency_s = b.latency_s = 0.05
        t = teacher([a.base_url, b.base_url], max_concurrency=2, backoff_s=0.2)
        replies = t.generate(requests(40))  # about 1 s at 2 x 50 ms
        assert all(not r.error for r in replies)
        assert len(b.answered) >= 5, "b answered again after its pause"
        assert len(a.answered) + len(b.answered) == 40 and len(b.requests) == len(b.answered) + 3


def test_every_replica_down_raises_naming_them_all():
    with FakeOpenAI() as a, FakeOpenAI() as b:
        a.faults, b.faults = ["500"] * 1000, ["500"] * 1000
        t = teacher([a.base_url, b.base_url], max_concurrency=2, outage_wait_s=0.5, backoff_s=0.05)
        start = time.monotonic()
        with pytest.raises(TeacherUnavailable) as e:
            t.generate(requests(6))
        assert time.monotonic() - start < 5
        assert str(e.value).startswith(f"teacher endpoint {a.base_url}, {b.base_url} is down") and "\n" not in str(e.value)
        assert not a.answered and not b.answered


def test_a_dead_replica_at_start_is_a_warning_while_another_answers(caplog):
    with FakeOpenAI() as a:
        dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            teacher([a.base_url, dead]).check_reachable()
        assert any(dead in r.getMessage() for r in caplog.records)
        with pytest.raises(TeacherError) as e:
            teacher([dead, "http://127.0.0.1:7/v1"]).check_reachable()
        assert "none of the 2 replicas" in str(e.value) and "\n" not in str(e.value)


def test_base_url_takes_one_url_or_a_list():
    from loop.config import ConfigError, build

    assert TeacherConfig().base_url == []
    assert build(TeacherConfig, {"base_url": "http://a:1/v1"}).base_url == ["http://a:1/v1"]
    assert build(TeacherConfig, {"base_url": "http://a:1/v1,http://b:1/v1"}).base_url == ["http://a:1/v1", "http://b:1/v1"]
    assert build(TeacherConfig, {"base_url": ["http://a:1/v1", "http://b:1/v1"]}).base_url == ["http://a:1/v1", "http://b:1/v1"]
    for bad, says in ((["a:1/v1"], r"not an http\(s\) URL"), (["http://a:1/v1", "http://a:1/v1"], "listed twice")):
        with pytest.raises(ConfigError, match=says):
            build(TeacherConfig, {"base_url": bad})


def test_the_wire_is_one_json_body_with_extra_body_on_top():
    """The lean path sends what the openai client sent: the same body, extra_body merged at the top level."""
    from generation.teacher.backends import TeacherOptions

    with FakeOpenAI() as s:
        opts = TeacherOptions(extra_body={"top_k": 20}, token_limit_param="max_completion_tokens")
        t = OpenAITeacher("fake-teacher", s.base_url, "", 1, 5.0, 0, options=opts)
        t.generate(requests(1))
        assert s.requests == [{"model": "fake-teacher", "messages": [{"role": "user", "content": requests(1)[0].messages[0][1]}],
                               "max_completion_tokens": 32, "seed": 0, "temperature": 0.7, "top_p": 0.9, "top_k": 20}]
        assert s.auth_headers == ["Bearer no-key"] and body_key(s.requests[0])


def test_the_environments_proxy_carries_the_requests(monkeypatch):
    """HTTP(S)_PROXY is honoured as the openai client honoured it: here the loopback server is the proxy, and the
    endpoint behind it does not exist."""
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeOpenAI() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1"))
        replies = teacher("http://daig-no-such-host.invalid/v1", max_retries=0).generate(requests(3))
        assert all(not r.error for r in replies) and len(proxy.requests) == 3
        monkeypatch.setenv("NO_PROXY", "daig-no-such-host.invalid")
        with pytest.raises(TeacherUnavailable):
            teacher("http://daig-no-such-host.invalid/v1", max_retries=0, outage_wait_s=0.0).generate(requests(1))
        assert len(proxy.requests) == 3
