"""Batch API mode (generation.teacher.mode: batch): a stage's requests go out as one batch job, at the provider's
batch price (OpenAI: half), instead of one HTTP request each.

The job is a JSONL file, one line per request: {"custom_id": <the request's cache key>, "method": "POST",
"url": "/v1/chat/completions", "body": <the body the online path would send>}. It is uploaded (/v1/files), made a
batch (/v1/batches), polled until it ends, and its output file is read back by custom_id. vLLM's
`vllm run-batch -i FILE -o OUT --model M` reads the same format, so the file can also be run offline on a GPU.

Never paid twice: the uploaded file's id is recorded in the teacher cache before the batch is created, and the batch id
right after. A killed run finds them there on resume and polls the same batch; a kill between upload and create finds
the batch by its input file (batches.list) before creating one. Lines that fail with a transport error (429, 5xx) or
expire with the batch window are sent again, as a smaller batch or online (batch_retry), up to max_retries times.
"""
from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import replace

from tqdm.auto import tqdm

from generation.teacher.backends import (OnReply, OnSend, OpenAITeacher, TeacherError, TeacherReply, TeacherRequest,
                                         TeacherUnavailable, completion_reply)
from generation.teacher.cache import TeacherCache

log = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
RETRYABLE = "retryable"  # a line's outcome that is sent again: a transport error or no result (expired, cancelled)


class BatchTeacher:
    """The Teacher protocol over the Batch API of `online`'s endpoint (its first base_url), with its model, options,
    key and retries. `cache` holds the jobs under way (its batch_jobs table), so batch mode needs the cache."""

    def __init__(self, online: OpenAITeacher, cache: TeacherCache, poll_s: float = 30.0, completion_window: str = "24h",
                 retry: str = "batch", max_requests: int = 50_000, max_bytes: int = 200_000_000):
        self.online, self.cache = online, cache
        self.model, self.options = online.model, online.options
        self.poll_s, self.window, self.retry, self.max_requests, self.max_bytes = poll_s, completion_window, retry, max_requests, max_bytes
        self.endpoint = online.base_urls[0] or "https://api.openai.com/v1"

    concurrent = False  # a stage is one job

    def key(self, request: TeacherRequest) -> str:
        return self.online.key(request)

    def prepaid(self, keys: list[str]) -> set[str]:
        """Keys in a job already under way: submitted (and journaled as sent) by an earlier process."""
        return set(self.cache.batch_jobs(keys, self.endpoint))

    def cancel(self) -> None:
        pass

    def check_reachable(self) -> None:
        self.online.check_reachable()

    def close(self) -> None:
        self.online.close()

    def _client(self):
        import openai

        return openai.OpenAI(api_key=self.online._key, base_url=self.endpoint, timeout=self.online.timeout_s, max_retries=2)

    def generate(self, requests: list[TeacherRequest], desc: str = "teacher", on_reply: OnReply | None = None,
                 on_send: OnSend | None = None) -> list[TeacherReply]:
        """Replies in request order. on_send(i, attempt) just before the batch holding request i is created (never
        again for a job a resumed run polls), on_reply(i, reply) as each reply is read back."""
        keys = [self.key(r) for r in requests]
        index = {k: i for i, k in enumerate(keys)}
        replies: list[TeacherReply | None] = [None] * len(requests)
        failed: dict[int, list[str]] = {i: [] for i in range(len(requests))}  # each request's failed attempts, by reason

        def deliver(i: int, reply: TeacherReply) -> None:
            reply.attempts, reply.attempt_errors = len(failed[i]) + 1, tuple(failed[i])
            replies[i] = reply
            if on_reply:
                on_reply(i, reply)

        import openai

        try:
            todo = self._attempts(requests, keys, index, failed, deliver, on_send, desc)
        except openai.OpenAIError as e:  # the Batch API itself failed: the jobs stay recorded
            raise TeacherUnavailable(f"the Batch API at {self.endpoint} failed ({type(e).__name__}: {str(e)[:200]}); the "
                                     "jobs under way stay recorded, and `daig resume` on the run folder polls them") from None
        if todo:
            for i in todo:  # the rest is delivered: say the unpaid outcome of these, so the ledger closes them
                if on_reply:
                    on_reply(i, TeacherReply("", "error", error=failed[i][-1], attempts=len(failed[i]), attempt_errors=tuple(failed[i][:-1])))
            raise TeacherUnavailable(
                f"{len(todo)} of {len(requests)} batch requests got no reply after {self.online.max_retries + 1} batches "
                f"({', '.join(sorted({failed[i][-1] for i in todo}))}) at {self.endpoint}; raise generation.teacher.max_retries "
                "or set generation.teacher.batch_retry: online, then `daig resume` on the run folder")
        return replies

    def _attempts(self, requests, keys, index, failed, deliver, on_send, desc) -> list[int]:
        """Batches until every request has a final reply or max_retries is spent; the indices still without one."""
        todo = list(range(len(requests)))
        with self._client() as client:
            for attempt in range(1, self.online.max_retries + 2):
                if attempt > 1 and self.retry == "online":
                    self._online(requests, todo, failed, deliver, on_send, desc)
                    todo = []
                    break
                again: list[int] = []

                def settle(part: list[int], outcome: dict[str, TeacherReply]) -> None:
                    """Deliver one finished job's replies (stored by the caller before the job is forgotten)."""
                    for i in part:
                        reply = outcome.get(keys[i])
                        if reply is None or reply.finish_reason == RETRYABLE:
                            failed[i].append(reply.error if reply else "batch_missing")
                            again.append(i)
                        else:
                            deliver(i, reply)
                def give_up(part: list[int], reason: str) -> None:
                    """A job refused whole: each request's outcome is known and unpaid, so the ledger closes it."""
                    for i in part:
                        deliver(i, TeacherReply("", "error", error=reason))
                self._round(client, requests, keys, index, todo, attempt, on_send, desc, settle, give_up)
                todo = again
                if not todo:
                    break
                log.warning("%s: %d of %d batch requests got no reply (%s); sending them again (attempt %d, batch_retry=%s)",
                            desc, len(todo), len(requests), ", ".join(sorted({failed[i][-1] for i in todo})), attempt + 1, self.retry)
        return todo

    def _online(self, requests, todo, failed, deliver, on_send, desc) -> None:
        """The retry knob's other way: what the batch left unanswered goes out as ordinary requests."""
        def send(j: int, attempt: int) -> None:
            if on_send:
                on_send(todo[j], len(failed[todo[j]]) + attempt)

        def got(j: int, reply: TeacherReply) -> None:
            failed[todo[j]].extend(reply.attempt_errors)
            deliver(todo[j], replace(reply, attempt_errors=()))

        self.online.generate([requests[i] for i in todo], desc=f"{desc} (online)", on_reply=got, on_send=send)

    def _round(self, client, requests, keys, index, todo, attempt, on_send, desc, settle, give_up) -> None:
        """One pass: resume the jobs already under way for these keys, submit the rest, wait for all of them, and hand
        each job's results to settle(its request indices, {key: reply}) before forgetting those keys; a reply with
        finish_reason RETRYABLE is to be sent again. A job that failed as a whole, or that someone cancelled at the
        provider (its finished lines are settled): give_up(the indices left, reason), then TeacherError."""
        under_way = self.cache.batch_jobs([keys[i] for i in todo], self.endpoint)
        jobs: dict[str, str] = {}  # file id -> batch id
        members: dict[str, list[int]] = {}  # file id -> request indices
        for i in todo:
            if keys[i] in under_way:
                members.setdefault(under_way[keys[i]][0], []).append(i)
        for file_id, batch_id in set(under_way.values()):
            jobs[file_id] = batch_id or self._find_or_create(client, file_id)
        if jobs:
            log.info("%s: resuming %d batch job%s under way (%s); nothing is submitted twice", desc, len(jobs),
                     "s" * (len(jobs) > 1), ", ".join(jobs.values()))
        fresh = [i for i in todo if keys[i] not in under_way]
        lines = {i: self.line(requests[i], keys[i]) for i in fresh}
        for part in job_parts(fresh, lines, self.max_requests, self.max_bytes):
            file_id = self._upload(client, b"".join(lines[i] for i in part))
            members[file_id] = part
            for i in part:  # journaled before the job is recorded: a kill now over-counts, never under-counts
                if on_send:
                    on_send(i, attempt)
            self.cache.record_batch_file([keys[i] for i in part], file_id, self.endpoint)
            jobs[file_id] = self._create(client, file_id)
            log.info("%s: batch %s submitted (%d requests); polling every %g s, a kill resumes polling", desc,
                     jobs[file_id], len(part), self.poll_s)
        refused = []
        for file_id, batch in self._wait(client, jobs, len(todo), desc).items():
            if batch is None:  # the provider no longer knows it (its files expired): its requests are sent again
                self.cache.forget_batch(file_id)
                settle(members[file_id], {})
            elif batch.status == "failed":  # refused before any line ran: nothing was paid
                self.cache.forget_batch(file_id)
                give_up(members[file_id], "batch_failed")
                errors = "; ".join(f"{e.code}: {e.message}" for e in (batch.errors.data if batch.errors else []) or [])
                refused.append(f"batch {jobs[file_id]} at {self.endpoint} failed ({errors or 'no reason given'}): fix the "
                               "request settings it names")
            else:
                outcome = self._results(client, batch, index, requests)
                if batch.status == "cancelled":  # by someone at the provider (this client never cancels): keep what ran, send no more
                    ran = [i for i in members[file_id] if keys[i] in outcome and outcome[keys[i]].finish_reason != RETRYABLE]
                    settle(ran, outcome)
                    give_up(sorted(set(members[file_id]) - set(ran)), "batch_cancelled")
                    refused.append(f"batch {jobs[file_id]} at {self.endpoint} was cancelled at the provider: its {len(ran)} "
                                   f"finished lines are kept and the other {len(members[file_id]) - len(ran)} were not sent again")
                else:
                    settle(members[file_id], outcome)
                # this call's keys only (stored now): the job's other keys keep it for their own calls
                self.cache.forget_batch(file_id, [keys[i] for i in members[file_id]])
        if refused:
            raise TeacherError(f"{'; '.join(refused)}; `daig resume` on the run folder sends what is missing as a new job")

    def line(self, request: TeacherRequest, key: str) -> bytes:
        """The request as a line of a job's input file; custom_id is its cache key."""
        return (json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": self.options.body(self.model, request)}) + "\n").encode()

    def _upload(self, client, data: bytes) -> str:
        return client.files.create(file=("daig_batch.jsonl", io.BytesIO(data)), purpose="batch").id

    def _create(self, client, file_id: str) -> str:
        # No client retry here: a create that timed out may have made the batch, and a second would be paid twice
        # (a resume finds it by its file instead).
        batch = client.with_options(max_retries=0).batches.create(input_file_id=file_id, endpoint=ENDPOINT,
                                                                  completion_window=self.window, metadata={"daig_input_file": file_id})
        self.cache.record_batch_id(file_id, batch.id)
        return batch.id

    def _find_or_create(self, client, file_id: str) -> str:
        """A kill came between upload and the batch id being recorded: the batch may exist; create it only if not."""
        for batch in client.batches.list(limit=100):
            if batch.input_file_id == file_id:
                self.cache.record_batch_id(file_id, batch.id)
                return batch.id
        return self._create(client, file_id)

    def _wait(self, client, jobs: dict[str, str], total: int, desc: str) -> dict[str, object]:
        """Poll every job until it ends: {file id: the final batch object, or None when the provider no longer knows it}."""
        import openai

        done: dict[str, object] = {}
        with tqdm(total=total, desc=f"{desc} (batch)", unit="req", leave=False) as bar:
            while len(done) < len(jobs):
                counted = 0
                for file_id, batch_id in jobs.items():
                    if file_id in done:
                        counted += _finished(done[file_id])
                        continue
                    try:
                        batch = client.batches.retrieve(batch_id)
                    except openai.NotFoundError:
                        done[file_id] = None
                        continue
                    if batch.status in ("completed", "expired", "cancelled", "failed"):
                        done[file_id] = batch
                    counted += _finished(batch)
                bar.n = min(counted, total)
                bar.refresh()
                if len(done) < len(jobs):
                    time.sleep(self.poll_s)
        return done

    def _results(self, client, batch, index: dict[str, int], requests: list[TeacherRequest]) -> dict[str, TeacherReply]:
        """{custom_id: reply} from a finished job's output and error files; lines it never ran, lines that are not
        JSON and files the provider no longer has are absent (their requests are sent again)."""
        import openai

        out = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                text = client.files.content(file_id).text
            except openai.NotFoundError:
                continue
            for line in text.splitlines():
                try:
                    item = json.loads(line)
                    key, response, error = item.get("custom_id"), item.get("response") or {}, item.get("error") or {}
                    status = int(response.get("status_code") or 0)
                except (ValueError, AttributeError, TypeError):
                    continue
                if key not in index:
                    continue
                if status == 200:
                    reply = completion_reply(response.get("body") or {}, requests[index[key]], self.options)
                    reply.batch = True
                elif status in (408, 409, 429) or status >= 500 or not status:  # a transport error, or expired unrun
                    reply = TeacherReply("", RETRYABLE, error=f"http_{status}" if status else str(error.get("code") or "batch_error"))
                else:  # the request itself was refused (a 4xx): a final reply, as online
                    reply = TeacherReply("", "error", error=f"http_{status}")
                out[key] = reply
        return out


def job_parts(order: list[int], lines: dict[int, bytes], max_requests: int, max_bytes: int) -> list[list[int]]:
    """The requests, in order, cut into jobs the provider takes: at most max_requests lines and max_bytes bytes of
    input file each (OpenAI: 50,000 and 200 MB)."""
    parts, part, size = [], [], 0
    for i in order:
        n = len(lines[i])
        if n > max_bytes:
            raise TeacherError(f"one batch request is {n:,} bytes, over generation.teacher.batch_max_bytes ({max_bytes:,}): "
                               "raise it to the provider's file limit, or shorten the prompts (generation.chunk_words)")
        if part and (len(part) == max_requests or size + n > max_bytes):
            parts.append(part)
            part, size = [], 0
        part.append(i)
        size += n
    return parts + [part] * bool(part)


def _finished(batch) -> int:
    counts = getattr(batch, "request_counts", None)
    return (counts.completed + counts.failed) if counts else 0
