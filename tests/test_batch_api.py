"""Batch API mode (issue 16): a stage's requests go out as one job through /v1/files and /v1/batches, priced at the
batch price; a kill while polling resumes polling and never resubmits; failed and expired lines are sent again.
Every count is taken at the loopback server (tests/openai_server.py) in its own process.

Run: pytest tests/test_batch_api.py -q
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_server import FakeOpenAI, ServerProcess

from generation.teacher.backends import OpenAITeacher, TeacherError, TeacherRequest, TeacherUnavailable
from generation.teacher.batch import BatchTeacher
from generation.teacher.cache import Budget, CachedTeacher, Journal, TeacherCache

REPO = Path(__file__).resolve().parents[1]
PRICES = dict(usd_per_m_prompt=1.0, usd_per_m_completion=2.0, batch_price_factor=0.5)


def requests(n):
    return [TeacherRequest((("user", f'Passage:\n"""\nThe valve number {i} is shut. It matters.\n"""\nAnswer it.'),), 32, 0.7, 0.9, i)
            for i in range(n)]


def batch_teacher(url, cache, journal=None, retry="batch", max_retries=2):
    online = OpenAITeacher("fake-teacher", url, "", 4, 5.0, max_retries, backoff_s=0.05)
    return CachedTeacher(BatchTeacher(online, cache, poll_s=0.05, retry=retry), cache, Budget(**PRICES), journal)


@pytest.fixture
def server(tmp_path):
    s = ServerProcess(tmp_path, batch_delay_s=0.2)
    yield s
    s.stop()


def test_a_stage_is_one_batch_job_priced_at_the_batch_price(tmp_path, server):
    cache = TeacherCache(tmp_path / "c.sqlite")
    teacher = batch_teacher(server.base_url, cache)
    replies = teacher.generate(requests(10))
    assert all(not r.error and r.text.startswith("The valve number") for r in replies)
    assert len(server.events("file_upload")) == 1 and [e["lines"] for e in server.events("batch_create")] == [10]
    assert len(server.events("batch_item")) == 10 and server.events("received") == [], "no online call"
    uploaded = [json.loads(x) for x in server_file(server, "file-1").splitlines()]
    assert [u["custom_id"] for u in uploaded] == [teacher.key(r) for r in requests(10)], "custom_id is the cache key"
    assert uploaded[0]["url"] == "/v1/chat/completions" and uploaded[0]["body"]["model"] == "fake-teacher"

    with FakeOpenAI() as online_server:  # the same requests online: the same tokens at twice the price
        online = CachedTeacher(OpenAITeacher("fake-teacher", online_server.base_url, "", 4, 5.0, 0), None, Budget(**PRICES))
        same = online.generate(requests(10))
    assert [r.text for r in same] == [r.text for r in replies]
    assert teacher.ledger.prompt_tokens == online.ledger.prompt_tokens and teacher.ledger.calls == 10
    assert teacher.ledger.cost_usd == pytest.approx(online.ledger.cost_usd / 2) and teacher.ledger.cost_usd > 0
    again = batch_teacher(server.base_url, cache).generate(requests(10))  # cached: nothing more at the server
    assert all(r.cached for r in again) and len(server.events("batch_create")) == 1
    assert cache.batch_jobs([teacher.key(r) for r in requests(10)], server.base_url) == {}, "a finished job is forgotten"


def test_a_stage_over_the_file_limit_goes_as_several_jobs_each_under_it(tmp_path, server):
    sizes = [len(x) + 1 for x in _first_file(tmp_path, server).splitlines()]  # each line's bytes, as uploaded
    limit = sum(sizes[:3])
    online = OpenAITeacher("fake-teacher", server.base_url, "", 4, 5.0, 0)
    cache = TeacherCache(tmp_path / "split.sqlite")
    teacher = CachedTeacher(BatchTeacher(online, cache, poll_s=0.05, max_bytes=limit), cache, Budget(**PRICES))
    uploads = len(server.events("file_upload"))
    replies = teacher.generate(requests(10))
    files = server.events("file_upload")[uploads:]
    assert [f["bytes"] for f in files] == [sum(sizes[i:i + 3]) for i in range(0, 10, 3)], "cut at the limit, in order"
    assert all(f["bytes"] <= limit for f in files) and [e["lines"] for e in server.events("batch_create")][-4:] == [3, 3, 3, 1]
    assert all(not r.error for r in replies) and teacher.ledger.calls == 10
    with pytest.raises(TeacherError, match="over generation.teacher.batch_max_bytes"):  # one request over the limit: said before any upload
        CachedTeacher(BatchTeacher(online, TeacherCache(tmp_path / "tiny.sqlite"), max_bytes=100), None, Budget()).generate(requests(2))
    assert len(server.events("file_upload")) == uploads + 4


def _first_file(tmp_path, server) -> str:
    batch_teacher(server.base_url, TeacherCache(tmp_path / "first.sqlite")).generate(requests(10))
    return server_file(server, server.events("file_upload")[0]["file"])


def server_file(server, file_id: str) -> str:
    import openai

    return openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0).files.content(file_id).text


CHILD = """
import sys
sys.path[:0] = [{tests!r}, {repo!r}]
from test_batch_api import batch_teacher, requests
from generation.teacher.cache import Journal, TeacherCache
cache = TeacherCache({cache!r})
batch_teacher({url!r}, cache, Journal({journal!r})).generate(requests(12))
"""


def test_a_kill_while_polling_resumes_polling_and_never_resubmits(tmp_path):
    server = ServerProcess(tmp_path, batch_delay_s=3.0)
    try:
        cache_path, journal_path = tmp_path / "c.sqlite", tmp_path / "teacher_calls.jsonl"
        code = CHILD.format(tests=str(REPO / "tests"), repo=str(REPO), cache=str(cache_path), url=server.base_url, journal=str(journal_path))
        child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while len(server.events("batch_poll")) < 3 and time.time() < deadline and child.poll() is None:
            time.sleep(0.02)
        assert child.poll() is None, child.stderr.read()[-2000:]
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert [e["status"] for e in server.events("batch_poll")][-1] == "in_progress" and not server.events("batch_item")

        cache, journal = TeacherCache(cache_path), Journal(journal_path)
        led = Journal.replay(journal_path, "generation")
        assert led.calls == 12 and led.unconfirmed == 12, "the killed process journaled its 12 calls, unanswered"
        resumed = batch_teacher(server.base_url, cache, journal)
        resumed.ledger = led.copy()
        replies = resumed.generate(requests(12))
        assert all(not r.error and r.text for r in replies)
        assert len(server.events("file_upload")) == 1 and len(server.events("batch_create")) == 1, "no resubmission"
        items = server.events("batch_item")
        assert len(items) == 12 and len({e["key"] for e in items}) == 12, "each line ran once"
        assert resumed.ledger.calls == 12 and resumed.ledger.unconfirmed == 0, "polled, not paid again"
        journal.close()
        final = Journal.replay(journal_path, "generation")
        assert final.calls == 12 and final.unconfirmed == 0 and final.cost_usd == pytest.approx(resumed.ledger.cost_usd)
    finally:
        server.stop()


def test_a_kill_between_upload_and_create_finds_the_batch_instead_of_creating_another(tmp_path, server):
    import openai

    cache = TeacherCache(tmp_path / "c.sqlite")
    teacher = batch_teacher(server.base_url, cache)
    inner = teacher.teacher
    client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
    keys = [teacher.key(r) for r in requests(5)]
    file_id = inner._upload(client, b"".join(inner.line(r, k) for r, k in zip(requests(5), keys)))
    teacher.cache.record_batch_file(keys, file_id, server.base_url)  # recorded: the file, no batch id yet
    client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")  # created; id lost in the kill
    replies = teacher.generate(requests(5))
    assert all(not r.error for r in replies)
    assert len(server.events("batch_create")) == 1 and len(server.events("batch_list")) == 1
    assert len(server.events("batch_item")) == 5


def test_failed_and_expired_lines_go_again_as_a_smaller_batch(tmp_path):
    server = ServerProcess(tmp_path, batch_delay_s=0.1, batch_fail_items=2, batch_expire_items=1)
    try:
        teacher = batch_teacher(server.base_url, TeacherCache(tmp_path / "c.sqlite"))
        replies = teacher.generate(requests(8))
        assert all(not r.error and r.text for r in replies)
        assert [e["lines"] for e in server.events("batch_create")] == [8, 3]
        assert [r.attempt_errors for r in replies[:2]] == [("http_500",)] * 2 and replies[7].attempt_errors == ("batch_expired",)
        assert all(r.attempts == 1 for r in replies[2:7])
        paid = [e for e in server.events("batch_item") if e["status_code"] == 200]
        assert len(paid) == 8 and len({e["key"] for e in paid}) == 8, "each request answered (paid) exactly once"
        assert teacher.ledger.calls == 8 and teacher.ledger.retries == 3
    finally:
        server.stop()


def test_batch_retry_online_sends_the_failed_lines_as_requests(tmp_path):
    server = ServerProcess(tmp_path, batch_delay_s=0.1, batch_fail_items=3)
    try:
        replies = batch_teacher(server.base_url, TeacherCache(tmp_path / "c.sqlite"), retry="online").generate(requests(6))
        assert all(not r.error for r in replies) and [r.attempts for r in replies] == [2, 2, 2, 1, 1, 1]
        assert [e["lines"] for e in server.events("batch_create")] == [6] and len(server.events("received")) == 3
        assert not any(r.batch for r in replies[:3]) and all(r.batch for r in replies[3:])
    finally:
        server.stop()


def test_lines_failing_every_batch_stop_the_run_to_be_resumed(tmp_path):
    server = ServerProcess(tmp_path, batch_delay_s=0.1, batch_fail_items=100)
    try:
        delivered = {}
        inner = batch_teacher(server.base_url, TeacherCache(tmp_path / "c.sqlite"), max_retries=1).teacher
        with pytest.raises(TeacherUnavailable) as e:
            inner.generate(requests(3), on_reply=lambda i, r: delivered.setdefault(i, r))
        assert str(e.value).startswith("3 of 3 batch requests got no reply after 2 batches (http_500)") and "daig resume" in str(e.value)
        assert sorted(delivered) == [0, 1, 2] and all(r.error == "http_500" for r in delivered.values())
        assert len(server.events("batch_create")) == 2
    finally:
        server.stop()


def test_a_failed_batch_is_one_line_is_forgotten_and_leaves_no_call_open(tmp_path):
    with FakeOpenAI() as s:
        s.batch_delay_s, s.batch_status_fault = 0.05, "failed"
        cache, journal = TeacherCache(tmp_path / "c.sqlite"), Journal(tmp_path / "teacher_calls.jsonl")
        teacher = batch_teacher(s.base_url, cache, journal)
        with pytest.raises(TeacherError) as e:
            teacher.generate(requests(2))
        assert "batch batch_1" in str(e.value) and "failed (invalid_request" in str(e.value) and "\n" not in str(e.value)
        assert cache.batch_jobs([teacher.key(r) for r in requests(2)], s.base_url) == {}, "nothing ran: resubmitted after a fix"
        journal.close()
        led = Journal.replay(tmp_path / "teacher_calls.jsonl", "generation")
        assert led.calls == 2 and led.unconfirmed == 0 and led.failures == {"batch_failed": 2} and led.cost_usd == 0


def test_a_batch_cancelled_at_the_provider_stops_the_run_and_resume_sends_the_rest_once(tmp_path):
    import threading

    import openai

    server = ServerProcess(tmp_path, batch_delay_s=2.0)
    try:
        cache, journal = TeacherCache(tmp_path / "c.sqlite"), Journal(tmp_path / "teacher_calls.jsonl")
        raised = []
        run = threading.Thread(target=lambda: raised.append(_raises(batch_teacher(server.base_url, cache, journal).generate, requests(5))))
        run.start()
        deadline = time.time() + 30
        while not server.events("batch_create") and time.time() < deadline:
            time.sleep(0.02)
        batch_id = server.events("batch_create")[0]["batch"]
        openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0).batches.cancel(batch_id)  # the user, at the provider
        run.join(timeout=30)
        assert raised and isinstance(raised[0], TeacherError), raised
        assert "was cancelled at the provider" in str(raised[0]) and "\n" not in str(raised[0])
        assert len(server.events("batch_create")) == 1 and not server.events("batch_item"), "nothing sent again by itself"
        journal.close()
        led = Journal.replay(tmp_path / "teacher_calls.jsonl", "generation")
        assert led.unconfirmed == 0 and led.failures == {"batch_cancelled": 5}, "every call closed, none paid"
        replies = batch_teacher(server.base_url, cache).generate(requests(5))  # `daig resume`
        assert all(not r.error for r in replies)
        assert [e["lines"] for e in server.events("batch_create")] == [5, 5] and len(server.events("batch_item")) == 5
    finally:
        server.stop()


def _raises(call, *args):
    try:
        call(*args)
    except Exception as e:  # handed to the test thread
        return e


def test_a_resumed_job_under_a_cap_delivers_what_it_paid_for_and_never_pays_again(tmp_path):
    """The killed run's job counts against the cap already: resumed, it is polled, not admitted (and cut) again."""
    server = ServerProcess(tmp_path, batch_delay_s=3.0)
    try:
        cache_path, journal_path = tmp_path / "c.sqlite", tmp_path / "teacher_calls.jsonl"
        code = CHILD.format(tests=str(REPO / "tests"), repo=str(REPO), cache=str(cache_path), url=server.base_url, journal=str(journal_path))
        child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not server.events("batch_poll") and time.time() < deadline and child.poll() is None:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        cache, journal = TeacherCache(cache_path), Journal(journal_path)
        online = OpenAITeacher("fake-teacher", server.base_url, "", 4, 5.0, 2, backoff_s=0.05)
        resumed = CachedTeacher(BatchTeacher(online, cache, poll_s=0.05), cache, Budget(max_calls=16, **PRICES), journal)
        resumed.ledger = Journal.replay(journal_path, "generation")
        replies = resumed.generate(requests(12))
        assert all(not r.error for r in replies), {r.error for r in replies}
        assert len(server.events("batch_create")) == 1 and len(server.events("batch_item")) == 12
        assert resumed.ledger.calls == 12 and resumed.ledger.unconfirmed == 0
    finally:
        server.stop()


def test_batch_mode_is_checked_at_config_load():
    from generation.config import TeacherConfig
    from loop.config import ConfigError, build

    for bad in ({"cache_path": ""}, {"base_url": "http://a:1/v1,http://b:1/v1"}, {"backend": "llamacpp"}):
        with pytest.raises(ConfigError, match="mode: batch needs backend: openai, one base_url and a cache_path"):
            build(TeacherConfig, {"backend": "openai", "mode": "batch", **bad})
    assert build(TeacherConfig, {"backend": "openai", "mode": "batch"}).batch_price_factor == 0.5


def test_a_run_in_batch_mode_killed_while_polling_resumes_to_the_rows_of_an_online_run(tmp_path, tiny_corpus, tiny_model):
    """End to end through `daig`: the same rows as online (the server answers a line as it answers a request), one job
    per stage, the kill costing no resubmission, and the ledger at the batch price."""
    from test_never_lose import daig, kill_when, rows, write_config

    server = ServerProcess(tmp_path, batch_delay_s=1.0)
    try:
        online_cfg = write_config(tmp_path / "online.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "online.sqlite",
                                  "generation.teacher.usd_per_m_prompt_tokens=1")
        done = daig("run", online_cfg, "--out", tmp_path / "online")
        assert done.returncode == 0, done.stderr[-3000:]
        online_calls = len(server.events("received"))
        cfg = write_config(tmp_path / "batch.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "batch.sqlite",
                           "generation.teacher.usd_per_m_prompt_tokens=1", "generation.teacher.mode=batch",
                           "generation.teacher.batch_poll_s=0.05")
        out = tmp_path / "batch"
        assert kill_when(["run", cfg, "--out", out], lambda proc: len(server.events("batch_poll")) >= 3)
        assert not server.events("batch_item"), "killed while the first job was still running"
        done = daig("resume", out)
        assert done.returncode == 0, done.stderr[-3000:]
        assert rows(out) == rows(tmp_path / "online")
        assert len(server.events("received")) == online_calls, "no online call in batch mode"
        items = server.events("batch_item")
        assert len(items) == online_calls and len({e["key"] for e in items}) == len(items), "each request ran once"
        assert len(server.events("batch_create")) == len(server.events("file_upload")) == 4, "one job per stage, 2 stages x 2 rounds"
        online_m = json.loads((tmp_path / "online" / "metrics.jsonl").read_text().splitlines()[-1])
        batch_m = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert batch_m["run_teacher_calls"] == online_m["run_teacher_calls"] == online_calls
        assert batch_m["run_cost_usd"] == pytest.approx(online_m["run_cost_usd"] / 2) and batch_m["run_cost_usd"] > 0
    finally:
        server.stop()
