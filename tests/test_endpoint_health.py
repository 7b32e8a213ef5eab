"""Endpoint health in the OpenAI-protocol teacher (issue 13): a dead or flaky endpoint ends generate() with
TeacherUnavailable instead of a round of rejected rows; a short outage is waited out. Counted at the server.

Run: pytest tests/test_endpoint_health.py -q
"""
import gc
import logging
import re
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from openai_server import FakeOpenAI

from generation.teacher.backends import OpenAITeacher, TeacherUnavailable, TeacherRequest

LOGGER = "generation.teacher.backends"


def requests(n, tag="q"):
    return [TeacherRequest((("user", f'Passage:\n"""\nThe {tag} number {i} is here. It matters.\n"""\nAnswer it.'),), 32, 0.7, 0.9, i)
            for i in range(n)]


def teacher(server, **kw):
    kw = {"max_concurrency": 4, "timeout_s": 1.0, "max_retries": 3, "backoff_s": 0.05, "max_backoff_s": 0.4, **kw}
    return OpenAITeacher("fake-teacher", server.base_url, "", **kw)


def stop_listening(server: FakeOpenAI) -> None:
    """The server process dies: new connections are refused (each request is its own HTTP/1.0 connection)."""
    server.server.shutdown()
    server.server.server_close()


def listen_again(server: FakeOpenAI) -> None:
    """The server comes back on the same port, with the same request log."""
    port = server.server.server_address[1]
    server.server = ThreadingHTTPServer(("127.0.0.1", port), server.server.RequestHandlerClass)
    threading.Thread(target=server.server.serve_forever, daemon=True).start()


def messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_server_dying_mid_call_raises_within_bounded_time(caplog):
    with FakeOpenAI() as server:
        def die_at_sixth(number, body):
            if number == 6:
                stop_listening(server)
                return True  # this request is dropped unanswered, and every later one is refused
            return False
        server.before_reply = die_at_sixth
        delivered = {}
        t = teacher(server, max_concurrency=2, outage_failures=3, outage_wait_s=1.0)
        start = time.monotonic()
        with caplog.at_level(logging.INFO), pytest.raises(TeacherUnavailable) as e:
            t.generate(requests(20), on_reply=lambda i, r: delivered.setdefault(i, r))
        took = time.monotonic() - start
        gc.collect()  # a task whose exception nobody retrieved would be reported now
    assert took < 5, took
    message = str(e.value)
    assert "\n" not in message and server.base_url in message and "connection" in message
    assert "outage_wait_s=1" in message and "`daig resume` on the run folder" in message
    assert re.search(r"no reply for [12] s", message), message
    # What the server answered before it died was delivered; the requests stopped between attempts were delivered as
    # their transport error (known unpaid, so the caller's ledger closes them); nothing else came back.
    answered = {i: r for i, r in delivered.items() if not r.error}
    assert 5 <= len(server.answered) == len(answered) < 20 and all(r.text for r in answered.values())
    assert {r.error for r in delivered.values() if r.error} <= {"connection"}
    assert messages(caplog, logging.WARNING), "each opening is logged"
    assert not [r for r in caplog.records if r.name == "asyncio"], [r.getMessage() for r in caplog.records if r.name == "asyncio"]


def test_closed_port_and_no_patience_stops_at_the_first_opening():
    with FakeOpenAI() as server:
        stop_listening(server)
        t = teacher(server, max_concurrency=1, outage_failures=2, outage_wait_s=0.0)
        start = time.monotonic()
        with pytest.raises(TeacherUnavailable, match=r"is down: 2 transport errors in a row \(last: connection\), no reply for 0 s"):
            t.generate(requests(5))
        assert time.monotonic() - start < 2


def test_outage_of_a_second_is_waited_out(caplog):
    with FakeOpenAI() as server:
        stop_listening(server)
        threading.Timer(1.0, listen_again, (server,)).start()
        # One retry per request would not last a second of refused connections; failures while down cost none.
        t = teacher(server, max_retries=1, outage_failures=2, outage_wait_s=10.0)
        with caplog.at_level(logging.INFO):
            replies = t.generate(requests(12))
        server.server.shutdown()
        server.server.server_close()
    assert all(not r.error and r.text for r in replies), [r.error for r in replies]
    assert len(server.answered) == len(server.requests) == 12  # refused connections never reach the server
    warnings = messages(caplog, logging.WARNING)
    assert warnings and all(f"teacher endpoint {server.base_url} is failing" in w for w in warnings)
    pauses = [float(w.split("pausing ")[1].split(" s")[0]) for w in warnings]
    assert pauses[:3] == [0.05, 0.1, 0.2] and max(pauses) == 0.4  # doubling from backoff_s, capped at max_backoff_s
    assert len(messages(caplog, logging.INFO)) == 1 and "answers again" in messages(caplog, logging.INFO)[0]


def test_5xx_burst_then_normal_replies_recovers(fake_openai, caplog):
    fake_openai.faults = ["500"] * 6
    t = teacher(fake_openai, max_concurrency=1, max_retries=2, outage_failures=3, outage_wait_s=10.0)
    with caplog.at_level(logging.INFO):
        replies = t.generate(requests(4))
    assert all(not r.error for r in replies) and len(fake_openai.answered) == 4
    assert len(fake_openai.requests) == 10  # every fault hit the one request, which spent only 2 of them as retries
    assert replies[0].attempts == 7 and replies[0].attempt_errors == ("http_500",) * 6
    assert len(messages(caplog, logging.WARNING)) == 4 and len(messages(caplog, logging.INFO)) == 1


def test_one_request_failing_every_attempt_raises_after_the_rest_are_delivered(fake_openai):
    doomed = requests(12)[3].messages[0][1]
    fake_openai.before_reply = lambda number, body: body["messages"][-1]["content"] == doomed
    delivered = {}
    t = teacher(fake_openai, max_retries=2)
    with pytest.raises(TeacherUnavailable) as e:
        t.generate(requests(12), on_reply=lambda i, r: delivered.setdefault(i, r))
    assert str(e.value).startswith("1 of 12 teacher requests failed after 3 attempts each (connection x1) at " + fake_openai.base_url)
    assert "timeout_s / max_retries" in str(e.value) and "`daig resume` on the run folder" in str(e.value)
    assert sorted(delivered) == list(range(12)), "every request, the failed one too, went through on_reply"
    assert delivered[3].error == "connection" and all(not r.error for i, r in delivered.items() if i != 3)
    assert [b["messages"][-1]["content"] for b in fake_openai.requests].count(doomed) == 3
    assert len(fake_openai.answered) == 11


def test_4xx_is_a_reply_not_an_outage(fake_openai, caplog):
    fake_openai.faults = ["401"] * 5
    t = teacher(fake_openai, max_concurrency=1, outage_failures=2, outage_wait_s=0.0)
    with caplog.at_level(logging.INFO):
        replies = t.generate(requests(8))
    assert [r.error for r in replies] == ["http_401"] * 5 + [""] * 3
    assert len(fake_openai.requests) == 8, "a 4xx is not retried"
    assert not messages(caplog, logging.WARNING)


def test_no_request_reaches_the_server_while_the_breaker_is_open(fake_openai, caplog):
    arrivals = []
    fake_openai.before_reply = lambda number, body: arrivals.append(time.time()) and False
    fake_openai.faults = ["500"] * 4  # the first four requests, sent together, all fail
    t = teacher(fake_openai, max_concurrency=4, backoff_s=1.0, max_backoff_s=1.0, outage_failures=3, outage_wait_s=10.0)
    with caplog.at_level(logging.INFO):
        replies = t.generate(requests(8))
    assert all(not r.error for r in replies) and len(fake_openai.answered) == 8
    opened = [r.created for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(opened) == 1 and "pausing 1 s" in messages(caplog, logging.WARNING)[0]
    # The fourth request was already on its way when the third failure opened the breaker; nothing else is sent
    # until the pause is over.
    during = [a for a in arrivals if opened[0] + 0.1 < a < opened[0] + 0.95]
    assert during == [] and len(arrivals) == 12 and sum(a > opened[0] + 0.95 for a in arrivals) == 8


def test_outage_knobs_are_validated():
    from generation.config import TeacherConfig
    from loop.config import build

    with pytest.raises(ValueError, match=r"outage_failures: must be >= 1, got 0"):
        build(TeacherConfig, {"outage_failures": 0})
    with pytest.raises(ValueError, match=r"outage_wait_s: must be >= 0"):
        build(TeacherConfig, {"outage_wait_s": -1.0})
    assert TeacherConfig(outage_wait_s=0.0).outage_failures == 8
