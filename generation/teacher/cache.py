"""Content-addressed teacher cache and cost ledger.

The cache is one sqlite file (WAL mode: safe under concurrent writers in several processes, and a kill
at any moment leaves the last committed state). Keys hash what changes the output (model, messages,
decoding parameters, seed, the teacher options that are set), never concurrency or batch size, so runs
and ablation arms pointing at the same file pay once for the same prompt. Only successful replies are
stored; failures are retried.

CachedTeacher wraps any teacher: it serves hits, sends misses, stores each reply as it arrives, keeps
the ledger (requests, hits, failures by reason, tokens, dollars) and enforces the budget caps.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from generation.teacher.backends import OnReply, Teacher, TeacherReply, TeacherRequest

BUDGET_EXHAUSTED = "budget_exhausted"
log = logging.getLogger(__name__)


class TeacherCache:
    def __init__(self, path: str | Path, lease_s: float = 60.0):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            _open_schema(self._db)
        except (OSError, sqlite3.Error) as e:
            raise CacheError(f"cannot open the teacher cache {self.path} ({e}): make its folder writable, or set "
                             "generation.teacher.cache_path to a writable file ('' turns the cache off)") from None
        self._lock = threading.Lock()
        self.owner, self.host, self.lease_s = uuid.uuid4().hex, socket.gethostname(), lease_s
        self._renewer: threading.Thread | None = None
        self._closed = threading.Event()

    def check_writable(self) -> None:
        """A write now, so a read-only file fails at start, not mid-round."""
        try:
            with self._lock:
                self._db.execute("DELETE FROM claims WHERE key = ''")
        except sqlite3.Error as e:
            raise CacheError(f"the teacher cache {self.path} is not writable ({e}): make it writable, or set "
                             "generation.teacher.cache_path to another file ('' turns the cache off)") from None

    def get_many(self, keys: list[str]) -> dict[str, TeacherReply]:
        with self._lock:
            return self._get(keys)

    def _get(self, keys: list[str]) -> dict[str, TeacherReply]:
        return _select_replies(self._db, keys)

    def put(self, key: str, model: str, reply: TeacherReply, cost_usd: float = 0.0) -> None:
        """Store a reply (successful ones only: failures are retried) with its tokens and cost, and drop our claim on it."""
        data = json.dumps({k: v for k, v in asdict(reply).items() if k not in ("cached", "attempts", "attempt_errors", "batch")})
        with self._lock:
            if not reply.error:
                self._db.execute("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?)", (key, model, data, time.time(), cost_usd))
            self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def claim(self, keys: list[str]) -> tuple[list[str], list[str], dict[str, TeacherReply]]:
        """Take the send of each key for this process, in one transaction: (ours to send, being sent by another live
        process, answered meanwhile). A claim of a dead process (its lease not renewed, or its pid gone on this host)
        is taken over, so a killed run never blocks another."""
        if not keys:
            return [], [], {}
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                answered = self._get(keys)
                held = {}
                for part, marks in _chunks(keys):
                    held.update({k: rest for k, *rest in self._db.execute(
                        f"SELECT key, owner, host, pid, expires FROM claims WHERE key IN ({marks})", part)})
                mine, theirs = [], []
                for k in keys:
                    if k not in answered:
                        (theirs if k in held and held[k][0] != self.owner and self._alive(*held[k][1:], now) else mine).append(k)
                self._db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                                     [(k, self.owner, self.host, os.getpid(), now + self.lease_s) for k in mine])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if mine and self._renewer is None:
            self._renewer = threading.Thread(target=self._renew, daemon=True, name="teacher-cache-lease")
            self._renewer.start()
        return mine, theirs, answered

    def claimable(self, key: str) -> bool:
        """No live process holds the key's send (its claim was released, lapsed or its owner died)."""
        with self._lock:
            row = self._db.execute("SELECT host, pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
        return row is None or not self._alive(*row, time.time())

    def release(self, keys: list[str]) -> None:
        with self._lock:
            for part, marks in _chunks(keys):
                self._db.execute(f"DELETE FROM claims WHERE owner = ? AND key IN ({marks})", [self.owner, *part])

    def _alive(self, host: str, pid: int, expires: float, now: float) -> bool:
        if expires < now:
            return False
        if host != self.host:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def _renew(self) -> None:
        """Keep this process's claims alive while it runs (a killed process stops renewing; its claims lapse)."""
        while not self._closed.wait(self.lease_s / 3):
            with self._lock:
                if self._closed.is_set():
                    return
                try:
                    self._db.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + self.lease_s, self.owner))
                except sqlite3.Error as e:  # a busy or failing file this time: try again next tick, never stop renewing
                    log.warning("could not renew this process's claims in %s (%s); retrying", self.path, e)

    def batch_jobs(self, keys: list[str], endpoint: str) -> dict[str, tuple[str, str]]:
        """{key: (file id, batch id or '')} of the keys already in a batch job at this endpoint."""
        found = {}
        with self._lock:
            for part, marks in _chunks(keys):
                found.update({k: (f, b or "") for k, f, b in self._db.execute(
                    f"SELECT key, file_id, batch_id FROM batch_jobs WHERE endpoint = ? AND key IN ({marks})", [endpoint, *part])})
        return found

    def record_batch_file(self, keys: list[str], file_id: str, endpoint: str) -> None:
        """Before the batch is created: the keys are in this uploaded file (a kill now finds the batch by its file)."""
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, '', ?, ?)",
                                 [(k, file_id, endpoint, time.time()) for k in keys])

    def record_batch_id(self, file_id: str, batch_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE batch_jobs SET batch_id = ? WHERE file_id = ?", (batch_id, file_id))

    def forget_batch(self, file_id: str, keys: list[str] | None = None) -> None:
        """These keys' replies are stored (or are to be sent again), or with keys None the job never ran: they may be
        sent again. A job's other keys keep their record, so a later call reads their lines instead of paying again."""
        with self._lock:
            if keys is None:
                self._db.execute("DELETE FROM batch_jobs WHERE file_id = ?", (file_id,))
            for part, marks in _chunks(keys or []):
                self._db.execute(f"DELETE FROM batch_jobs WHERE file_id = ? AND key IN ({marks})", [file_id, *part])

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            self._db.close()


class CacheError(OSError):
    """The cache file cannot be opened or written; the message names the fix."""


def peek_replies(path: str | Path, keys: list[str]) -> dict[str, TeacherReply]:
    """Cached replies by key, with the file opened read-only (a trace or report never writes it, nor needs to)."""
    p = Path(path).expanduser() if path else None
    if not p or not p.exists() or not keys:
        return {}
    try:
        db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _select_replies(db, keys)
        finally:
            db.close()
    except sqlite3.Error as e:
        raise CacheError(f"teacher cache {p} could not be read ({e})") from None


def _open_schema(db: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """WAL mode and the tables, safe when several processes open a new or old file at the same moment.
    Switching to WAL can report "locked" at once without waiting on the busy timeout, so it is retried; the
    schema is made (and an old cache migrated) in one write transaction, so two openers never both ALTER."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, created REAL)")
        if "cost_usd" not in {row[1] for row in db.execute("PRAGMA table_info(replies)")}:  # a cache from before rows carried their cost
            db.execute("ALTER TABLE replies ADD COLUMN cost_usd REAL")
        db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, host TEXT, pid INTEGER, expires REAL)")
        # Batch API jobs under way (generation/teacher/batch.py): each request key with its uploaded file and, once
        # created, its batch, so a killed run polls the same batch instead of paying for a second one.
        db.execute("CREATE TABLE IF NOT EXISTS batch_jobs (key TEXT PRIMARY KEY, file_id TEXT, batch_id TEXT, endpoint TEXT, created REAL)")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _chunks(keys: list[str], size: int = 500):
    """(keys, '?,?,...') in slices small enough for sqlite's limit on bound parameters."""
    for start in range(0, len(keys), size):
        part = keys[start:start + size]
        yield part, ",".join("?" * len(part))


def _select_replies(db: sqlite3.Connection, keys: list[str]) -> dict[str, TeacherReply]:
    found = {}
    for part, marks in _chunks(keys):
        found.update({k: TeacherReply(**json.loads(v)) for k, v in db.execute(f"SELECT key, reply FROM replies WHERE key IN ({marks})", part)})
    return found


@dataclass
class Ledger:
    """What the teacher cost. Tokens and dollars count paid calls only (cache hits are free). `unconfirmed` counts
    calls that went out in an earlier process and never came back (it was killed): maybe paid, so the caps count
    them at their worst-case tokens and cost."""
    requests: int = 0
    cache_hits: int = 0
    calls: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    unconfirmed: int = 0
    unconfirmed_tokens: int = 0
    unconfirmed_usd: float = 0.0

    def minus(self, before: "Ledger") -> "Ledger":
        def diff(a, b):
            if isinstance(a, dict):
                return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}
            return a - b
        return Ledger(**{f.name: diff(getattr(self, f.name), getattr(before, f.name)) for f in fields(Ledger)})

    def copy(self) -> "Ledger":
        return Ledger(**{**asdict(self), "failures": dict(self.failures), "retry_reasons": dict(self.retry_reasons)})

    def add_reply(self, prompt_tokens: int, completion_tokens: int, usd: float, error: str, retry_reasons) -> None:
        """Count one request's final reply: as it arrives, and again the same way when the journal is replayed."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += usd
        for reason in retry_reasons:
            self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1
        if error:
            self.failures[error] = self.failures.get(error, 0) + 1

    def paid_from(self, other: "Ledger") -> "Ledger":
        """This ledger's lookups (requests, cache hits) with `other`'s paid calls: a resumed run's ledger, whose paid
        part is replayed from the journal and whose lookups come from the checkpoint."""
        return Ledger(**{**asdict(other), "requests": self.requests, "cache_hits": self.cache_hits})


class Journal:
    """OUT/teacher_calls.jsonl, the run's durable record of paid calls: a line before each attempt goes out, a line
    when the request's final reply comes back (before anything uses it). Lines are flushed to the OS at once, so a
    killed process loses none (an OS crash may lose the last ones). A resumed run rebuilds its ledger from it, so its
    budget counts every call any earlier attempt paid for, and the calls in flight at a kill."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        torn = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
        self._f = open(self.path, "a", encoding="utf-8")
        if torn:  # a kill mid-line: end it, so the next event is a line of its own
            self._f.write("\n")

    def base(self, tag: str, led: Ledger) -> None:
        """Start a journal for a run begun before journals existed: the paid part of its checkpointed ledger."""
        self._write({"e": "base", "t": tag, **{k: v for k, v in asdict(led).items() if k not in ("requests", "cache_hits")}})

    def _write(self, event: dict) -> None:
        with self._lock:
            self._f.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._f.flush()

    def sent(self, tag: str, key: str, attempt: int, worst_tokens: int, worst_usd: float) -> None:
        self._write({"e": "sent", "t": tag, "k": key, "a": attempt, "wt": worst_tokens, "wu": worst_usd})

    def replied(self, tag: str, key: str, reply: TeacherReply, usd: float) -> None:
        self._write({"e": "reply", "t": tag, "k": key, "pt": reply.prompt_tokens, "ct": reply.completion_tokens, "u": usd,
                     "err": reply.error, "retries": list(reply.attempt_errors)})

    def sync(self) -> None:
        with self._lock:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        with self._lock:
            self._f.close()

    @staticmethod
    def replay(path: str | Path, tag: str) -> Ledger:
        """The paid part of the `tag` ledger (calls, retries, failures, tokens, cost, unconfirmed) from the journal.
        A torn last line (a kill mid-write) is skipped: its call is then counted as sent and unconfirmed."""
        led, open_calls = Ledger(), {}
        path = Path(path)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for line in lines:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("t") != tag:
                continue
            if ev["e"] == "base":
                led = Ledger(**{k: v for k, v in ev.items() if k not in ("e", "t")})
                continue
            if ev["e"] == "sent":  # attempt 1 opens a call, later attempts are its retries
                if ev["a"] == 1:
                    led.calls += 1
                    open_calls.setdefault(ev["k"], []).append((ev["wt"], ev["wu"]))
                else:
                    led.retries += 1
                continue
            if open_calls.get(ev["k"]):
                open_calls[ev["k"]].pop()
            led.add_reply(ev["pt"], ev["ct"], ev["u"], ev["err"], ev["retries"])
        for worst in open_calls.values():
            for tokens, usd in worst:
                led.unconfirmed += 1
                led.unconfirmed_tokens += tokens
                led.unconfirmed_usd += usd
        return led


@dataclass
class Budget:
    max_calls: int = 0  # 0 = no cap
    max_tokens: int = 0
    max_cost_usd: float = 0.0
    usd_per_m_prompt: float = 0.0
    usd_per_m_completion: float = 0.0
    batch_price_factor: float = 1.0  # a Batch API reply costs this share of the online price

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        usd = (prompt_tokens * self.usd_per_m_prompt + completion_tokens * self.usd_per_m_completion) / 1e6
        return usd * self.batch_price_factor if batch else usd


def worst_case_tokens(r: TeacherRequest, system_prompt: str = "") -> tuple[int, int]:
    """An upper bound on a request's tokens before sending: a byte-level token is at least one byte,
    plus chat-template overhead per message (the teacher's system prompt counted as one more)."""
    extra = len(system_prompt.encode()) + 16 if system_prompt else 0
    return sum(len(c.encode()) + 16 for _, c in r.messages) + extra, r.max_tokens


class CachedTeacher:
    """journal/tag: where this ledger's paid calls are recorded durably (the run's journal; tag names the ledger:
    generation, judge or eval_sets). poll_s: how often to look for a reply another process is fetching.

    generate() may run in several threads at once when the inner teacher is `concurrent` (a round's overlapped
    stages): the ledger is kept under a lock, and requests admitted by one call but not yet paid are reserved at their
    worst case, so two calls together never cross a cap either."""

    def __init__(self, teacher: Teacher, cache: TeacherCache | None, budget: Budget, journal: Journal | None = None,
                 tag: str = "generation", poll_s: float = 0.2):
        self.teacher, self.cache, self.budget = teacher, cache, budget
        self.journal, self.tag, self.poll_s = journal, tag, poll_s
        self.model, self.options = teacher.model, teacher.options
        # Concurrent calls (overlapped stages) only without caps: a capped budget admits pass by pass, and overlapping
        # the stages would change which requests a cap cuts.
        self.concurrent = teacher.concurrent and not (budget.max_calls or budget.max_tokens or budget.max_cost_usd)
        self.ledger = Ledger()
        self.exhausted = ""  # which cap stopped generation, once one did
        self._lock = threading.RLock()
        self._reserved = [0, 0, 0.0]  # admitted, not yet counted in the ledger: calls, worst-case tokens, worst-case usd

    def key(self, request: TeacherRequest) -> str:
        return self.teacher.key(request)

    def cancel(self) -> None:
        self.teacher.cancel()

    def generate(self, requests: list[TeacherRequest], desc: str = "teacher", on_reply: OnReply | None = None) -> list[TeacherReply]:
        """Replies in request order. on_reply(i, reply), when given, hears each request's final reply as soon as it
        is known (cache hits first), from whichever thread learns it."""
        keys = [self.key(r) for r in requests]
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        with self._lock:
            self.ledger.requests += len(requests)
        first: dict[str, int] = {}  # identical requests in one call are sent once
        for i, k in enumerate(keys):
            if k not in hits:
                first.setdefault(k, i)
        by_key: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            by_key.setdefault(k, []).append(i)
        out: list[TeacherReply | None] = [None] * len(requests)

        def settle(k: str, reply: TeacherReply, paid_now: bool) -> None:
            for i in by_key[k]:
                out[i] = TeacherReply(**{**asdict(reply), "cached": not (paid_now and first.get(k) == i)})
                if on_reply:
                    on_reply(i, out[i])

        for k in by_key:
            if k in hits:
                settle(k, hits[k], False)
        pending, waiting, said = list(first.values()), [], time.monotonic()
        try:
            while pending or waiting:
                if not pending:  # another process is fetching these: wait for its replies, or for its claims to lapse
                    time.sleep(self.poll_s)
                    if time.monotonic() - said > 60:  # the holder lives and renews its claims; say so now and then
                        log.info("%s: still waiting for %d requests another process sharing the cache is sending", desc, len(waiting))
                        said = time.monotonic()
                    found = self.cache.get_many([keys[i] for i in waiting])
                    for k, reply in found.items():
                        hits[k] = reply
                        settle(k, reply, False)
                    waiting = [i for i in waiting if keys[i] not in hits]
                    freed = {i for i in waiting if self.cache.claimable(keys[i])}
                    pending, waiting = [i for i in waiting if i in freed], [i for i in waiting if i not in freed]
                    continue
                admitted, held = self._admit(pending, requests, keys)
                pending = pending[len(admitted):] if admitted else []  # nothing fits a cap: the rest is never sent
                try:
                    mine, theirs, answered = self.cache.claim([keys[i] for i in admitted]) if self.cache is not None else ([keys[i] for i in admitted], [], {})
                    for k, reply in answered.items():
                        hits[k] = reply
                        settle(k, reply, False)
                    if theirs and not waiting:
                        log.info("%s: %d requests are being sent by another process sharing the cache; waiting for its replies", desc, len(theirs))
                    theirs, mine = set(theirs), set(mine)
                    waiting += [i for i in admitted if keys[i] in theirs]
                    send = [i for i in admitted if keys[i] in mine]

                    def got(j: int, reply: TeacherReply, send=send) -> None:  # j: the position in `send`
                        settle(keys[send[j]], reply, True)
                    self._send([requests[i] for i in send], [keys[i] for i in send], desc, [held[i] for i in send], got)
                finally:
                    self._release(held.values())  # what was admitted and never paid: unclaimed, theirs, unsent
        finally:
            if self.cache is not None:
                self.cache.release(list(first))
        for i, k in enumerate(keys):
            if out[i] is None:  # over budget: never sent
                out[i] = TeacherReply("", "error", error=BUDGET_EXHAUSTED)
                self._fail(BUDGET_EXHAUSTED)
                if on_reply:
                    on_reply(i, out[i])
        with self._lock:
            self.ledger.cache_hits += sum(k in hits for k in keys)  # hits: replies this call did not pay for
        return out

    def _admit(self, pending: list[int], requests: list[TeacherRequest], keys: list[str]) -> tuple[list[int], dict[int, list]]:
        """The longest prefix of pending whose worst case fits every cap, and its reservations {index: [call, tokens,
        usd]}; records which cap stopped it. Calls an earlier (killed) process sent and never saw answered count at
        their worst case, and so do calls other threads admitted and have not paid yet."""
        b, led = self.budget, self.ledger
        admitted, held = [], {}
        prepaid = self.teacher.prepaid([keys[i] for i in pending])  # in a batch job a killed run paid for: counted already
        with self._lock:
            calls, tokens, cost = led.calls + self._reserved[0], led.prompt_tokens + led.completion_tokens + led.unconfirmed_tokens, led.cost_usd + led.unconfirmed_usd
            tokens, cost, stop = tokens + self._reserved[1], cost + self._reserved[2], ""
            for i in pending:
                if keys[i] in prepaid:
                    admitted.append(i)
                    held[i] = [0, 0, 0.0]
                    continue
                p, c = worst_case_tokens(requests[i], self.teacher.options.system_prompt)
                if b.max_calls and calls >= b.max_calls:
                    stop = "max_teacher_calls"
                elif b.max_tokens and tokens + p + c > b.max_tokens:
                    stop = "max_teacher_tokens"
                elif b.max_cost_usd and cost + b.cost(p, c) > b.max_cost_usd:
                    stop = "max_cost_usd"
                if stop:
                    self.exhausted = self.exhausted or stop
                    break
                admitted.append(i)
                held[i] = [1, p + c, b.cost(p, c)]
                calls, tokens, cost = calls + 1, tokens + p + c, cost + b.cost(p, c)
            for r in held.values():
                self._reserved = [x + y for x, y in zip(self._reserved, r)]
        return admitted, held

    def _release(self, reservations, part: slice = slice(None)) -> None:
        """Give back (part of) each reservation: [call, tokens, usd] -> zeros, as the ledger takes it over."""
        with self._lock:
            for r in reservations:
                for j in range(3)[part]:
                    self._reserved[j] -= r[j]
                    r[j] = 0

    def _send(self, requests: list[TeacherRequest], keys: list[str], desc: str, held: list[list], got) -> None:
        """Send, counting each call when it goes out and each reply the moment it arrives: journal first (durable),
        then the cache (with its tokens and cost), then the in-memory ledger, then got(i, reply)."""
        led, went_out = self.ledger, set()

        def on_send(i: int, attempt: int) -> None:
            went_out.add(i)
            if self.journal is not None:
                p, c = worst_case_tokens(requests[i], self.teacher.options.system_prompt)
                self.journal.sent(self.tag, keys[i], attempt, p + c, self.budget.cost(p, c))
            with self._lock:
                led.calls += attempt == 1
                led.retries += attempt > 1
                self._release([held[i]], slice(0, 1))  # the call is the ledger's now

        def on_reply(i: int, reply: TeacherReply) -> None:
            usd = self.budget.cost(reply.prompt_tokens, reply.completion_tokens, reply.batch)
            if self.journal is not None:
                self.journal.replied(self.tag, keys[i], reply, usd)
            if self.cache is not None:
                self.cache.put(keys[i], self.model, reply, usd)
            with self._lock:
                led.add_reply(reply.prompt_tokens, reply.completion_tokens, usd, reply.error, reply.attempt_errors)
                self._release([held[i]])
                if i not in went_out and led.unconfirmed:  # a batch job an earlier process paid for: its call is confirmed now
                    p, c = worst_case_tokens(requests[i], self.teacher.options.system_prompt)
                    led.unconfirmed -= 1
                    led.unconfirmed_tokens = max(0, led.unconfirmed_tokens - p - c)
                    led.unconfirmed_usd = max(0.0, led.unconfirmed_usd - self.budget.cost(p, c))
            got(i, reply)

        if requests:
            self.teacher.generate(requests, desc=desc, on_reply=on_reply, on_send=on_send)

    def _fail(self, reason: str) -> None:
        with self._lock:
            self.ledger.failures[reason] = self.ledger.failures.get(reason, 0) + 1

    def close(self) -> None:
        self.teacher.close()
        if self.cache is not None:
            self.cache.close()
        if self.journal is not None:
            self.journal.close()
